//! What a sink does with rows its store refuses, and what a run reports as written, against a
//! real `redis-server`: a row Redis refuses is rejected alone, with Redis's reason, while every
//! other row is written; a server lost for good fails the run whatever the policy; `rows
//! written` counts rows the store acknowledged; a dead letter that cannot be written fails the
//! run, and then nothing is committed.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::services::{RedisServer, S3Server};
use common::{Lines, runner, stderr, temp, wait_until};

/// `rows` rows `key,label` (keys `k0`, `k1`, ...) in `dir/rows.csv`.
fn rows_file(dir: &Path, rows: usize) -> PathBuf {
    let path = dir.join("rows.csv");
    let body: String = (0..rows).map(|i| format!("k{i},label-{i}\n")).collect();
    std::fs::write(&path, format!("key,label\n{body}")).unwrap();
    path
}

/// A spec from `rows.csv` in `dir` to a Redis sink with `config` (after `url`), the sink's
/// error policy `policy` (its TOML lines) and `batch_rows`.
fn redis_spec(dir: &Path, redis: &str, config: &str, policy: &str, batch_rows: usize) -> PathBuf {
    let path = dir.join("spec.toml");
    std::fs::write(
        &path,
        format!(
            "[pipeline]\nbatch_rows = {batch_rows}\n\n[source]\nkind = \"csv\"\nconfig = {{ url = \"rows.csv\" }}\n\n\
             [sink]\nkind = \"redis\"\n{policy}\nconfig = {{ url = \"{redis}\", {config} }}\n"
        ),
    )
    .unwrap();
    path
}

fn run_json(spec: &Path) -> (Output, serde_json::Value) {
    let output = runner().args(["run", "--report", "json"]).arg(spec).output().unwrap();
    let report = serde_json::from_str(stderr(&output).lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {}", stderr(&output)));
    (output, report)
}

/// The dead letter's entries, as JSON.
fn entries(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Keys in Redis holding a hash.
fn hashes(redis: &RedisServer) -> BTreeSet<String> {
    let mut connection = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
    keys.into_iter()
        .filter(|key| redis::cmd("TYPE").arg(key).query::<String>(&mut connection).unwrap() == "hash")
        .collect()
}

/// Two keys already hold lists, so Redis refuses the sink's `HSET` on them (`WRONGTYPE`): with
/// `dead-letter`, exactly those two rows are in the dead letter, each with Redis's reason, and
/// every other row is in Redis; the report counts 4,998 written and 2 rejected. With one round
/// trip in flight (each failure noticed while the next batch is written) and with the
/// defaults alike. With `skip`, the same without a dead letter; with `fail`, the run fails
/// naming the row and the reason.
#[test]
fn a_row_redis_refuses_is_rejected_alone_with_its_reason() {
    let Some(redis) = RedisServer::start() else { return };
    let dir = temp();
    rows_file(dir.path(), 5000);
    let dead = dir.path().join("rejected.jsonl");
    let policy = format!("on_error = \"dead-letter\"\ndead_letter = {{ url = \"{}\" }}", dead.display());
    let all: BTreeSet<String> = (0..5000).map(|i| format!("k{i}")).collect();
    let refused = ["k7", "k4500"];
    for (config, batch_rows) in [
        ("fields = [\"label\"], in_flight = 1", 10),
        ("fields = [\"label\"]", 4096),
        ("fields = [\"label\"], pipeline = 7", 300),
        ("fields = [\"label\"], ttl_seconds = 600", 512),
    ] {
        redis::cmd("FLUSHALL").query::<()>(&mut redis.connection()).unwrap();
        for key in refused {
            redis::cmd("RPUSH").arg(key).arg("not a hash").query::<()>(&mut redis.connection()).unwrap();
        }
        let _ = std::fs::remove_file(&dead);
        let spec = redis_spec(dir.path(), &redis.url(), config, &policy, batch_rows);
        let (output, report) = run_json(&spec);
        assert!(output.status.success(), "{config}: {}", stderr(&output));
        let rejected = entries(&dead);
        // Round trips settle in any order: so do their refusals.
        let mut keys: Vec<&str> = rejected.iter().map(|e| e["row"]["key"].as_str().unwrap()).collect();
        keys.sort_by_key(|key| key[1..].parse::<u32>().unwrap());
        assert_eq!(keys, refused, "{config}: exactly the refused rows are dead-lettered: {rejected:?}");
        for entry in &rejected {
            assert_eq!(entry["step"], "sink");
            let reason = entry["reason"].as_str().unwrap();
            assert!(reason.contains("WRONGTYPE"), "{config}: {reason}");
        }
        let expected: BTreeSet<String> = all.iter().filter(|k| !refused.contains(&k.as_str())).cloned().collect();
        assert_eq!(hashes(&redis), expected, "{config}: every other row is written");
        assert_eq!(report["rows_written"], 4998, "{config}: {report}");
        assert_eq!(report["steps"][1]["rejected"], 2, "{config}: {report}");
        // The lists are untouched, and get no expiry: with `ttl_seconds`, the key whose HSET
        // Redis refused is not given the row's EXPIRE.
        let list: Vec<String> = redis::cmd("LRANGE").arg("k7").arg(0).arg(-1).query(&mut redis.connection()).unwrap();
        assert_eq!(list, ["not a hash"]);
        for key in refused {
            let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut redis.connection()).unwrap();
            assert_eq!(ttl, -1, "{config}: someone else's key {key} was given an expiry");
        }
        if config.contains("ttl_seconds") {
            let ttl: i64 = redis::cmd("TTL").arg("k8").query(&mut redis.connection()).unwrap();
            assert!(ttl > 500, "{config}: the written rows expire: {ttl}");
        }
    }

    // `skip`: the same rows written, the two counted.
    redis::cmd("FLUSHALL").query::<()>(&mut redis.connection()).unwrap();
    for key in refused {
        redis::cmd("RPUSH").arg(key).arg("not a hash").query::<()>(&mut redis.connection()).unwrap();
    }
    let spec = redis_spec(dir.path(), &redis.url(), "fields = [\"label\"]", "on_error = \"skip\"", 512);
    let (output, report) = run_json(&spec);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!((report["rows_written"].as_u64(), report["steps"][1]["rejected"].as_u64()), (Some(4998), Some(2)));
    assert_eq!(hashes(&redis).len(), 4998);

    // `fail`: the run fails, naming the row and Redis's reason.
    let spec = redis_spec(dir.path(), &redis.url(), "fields = [\"label\"]", "", 512);
    let (output, report) = run_json(&spec);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("step `sink`: the store refused a row: ") && line.contains("WRONGTYPE"), "{line}");
    assert!(line.contains("\"key\":\"k7\"") || line.contains("\"key\":\"k4500\""), "{line}");
    assert_eq!(report["ok"], false);
}

/// An ACL that denies some keys refuses their rows alone: with `dead-letter`, exactly those rows
/// are rejected, each with Redis's reason (`NOPERM`), and every other row is written, for plain values
/// (an `MSET` of 100 rows, refused whole, sent again row by row) and for hashes with an expiry.
/// An ACL that denies the command itself refuses every row: that is the server's setup, not the
/// rows', and the run fails (exit 1) even under `skip`, rather than exiting 0 with nothing
/// written. The password in the URL is never printed.
#[test]
fn an_acl_refusal_is_the_rows_only_when_it_names_their_keys() {
    let Some(redis) = RedisServer::start() else { return };
    let mut connection = redis.connection();
    for rules in [
        &["on", ">s3cret/pw", "~k*", "+@all"][..],
        &["on", ">s3cret/pw", "~*", "+@all", "-hset", "-hmset", "-eval", "-mset", "-set"][..],
    ] {
        let user = if rules.contains(&"-hset") { "nowrite" } else { "someKeys" };
        redis::cmd("ACL").arg("SETUSER").arg(user).arg("reset").arg(rules).query::<()>(&mut connection).unwrap();
    }
    let dir = temp();
    // Keys k0..k299, but for three rows keyed outside the `k*` the ACL allows.
    let body: String = (0..300)
        .map(|i| if [5, 150, 299].contains(&i) { format!("x{i},label-{i}\n") } else { format!("k{i},label-{i}\n") })
        .collect();
    std::fs::write(dir.path().join("rows.csv"), format!("key,label\n{body}")).unwrap();
    let dead = dir.path().join("rejected.jsonl");
    let policy = format!("on_error = \"dead-letter\"\ndead_letter = {{ url = \"{}\" }}", dead.display());
    let url = redis.url().replace("redis://", "redis://someKeys:s3cret%2Fpw@");
    for config in ["value = \"label\"", "fields = [\"label\"], ttl_seconds = 600"] {
        redis::cmd("FLUSHALL").query::<()>(&mut connection).unwrap();
        let _ = std::fs::remove_file(&dead);
        let spec = redis_spec(dir.path(), &url, config, &policy, 128);
        let (output, report) = run_json(&spec);
        let err = stderr(&output);
        assert!(output.status.success(), "{config}: {err}");
        assert!(!err.contains("s3cret"), "{config}: {err}");
        let rejected = entries(&dead);
        let keys: BTreeSet<&str> = rejected.iter().map(|e| e["row"]["key"].as_str().unwrap()).collect();
        assert_eq!(keys, BTreeSet::from(["x5", "x150", "x299"]), "{config}: {rejected:?}");
        assert_eq!(rejected.len(), 3, "{config}: {rejected:?}");
        assert!(
            rejected.iter().all(|e| e["reason"].as_str().unwrap().contains("no permissions to access")),
            "{rejected:?}"
        );
        assert_eq!(redis.dbsize(), 297, "{config}: every other row is written");
        assert_eq!((report["rows_written"].as_u64(), report["steps"][1]["rejected"].as_u64()), (Some(297), Some(3)));
    }

    let url = redis.url().replace("redis://", "redis://nowrite:s3cret%2Fpw@");
    for config in ["value = \"label\"", "fields = [\"label\"]", "fields = [\"label\"], ttl_seconds = 600"] {
        redis::cmd("FLUSHALL").query::<()>(&mut connection).unwrap();
        let spec = redis_spec(dir.path(), &url, config, "on_error = \"skip\"", 128);
        let (output, report) = run_json(&spec);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{config}: {err}");
        assert!(err.contains("no permissions to run"), "{config}: {err}");
        assert!(!err.contains("s3cret"), "{config}: {err}");
        assert_eq!(report["steps"][1]["rejected"], 0, "{config}: nothing is the rows' fault: {report}");
        assert_eq!(redis.dbsize(), 0);
    }
}

/// A row whose every field is null has nothing to `HSET` (Redis holds no empty hash): it is
/// rejected before anything is sent, with a reason saying so, rather than counted as written
/// with nothing in Redis. A row with some fields null writes the others.
#[test]
fn a_hash_row_with_every_field_null_is_rejected() {
    let Some(redis) = RedisServer::start() else { return };
    let dir = temp();
    std::fs::write(dir.path().join("rows.csv"), "key,a,b\nk0,1,x\nk1,,\nk2,,y\nk3,3,\n").unwrap();
    let dead = dir.path().join("rejected.jsonl");
    let policy = format!("on_error = \"dead-letter\"\ndead_letter = {{ url = \"{}\" }}", dead.display());
    let spec = redis_spec(dir.path(), &redis.url(), "fields = [\"a\", \"b\"]", &policy, 10);
    let (output, report) = run_json(&spec);
    assert!(output.status.success(), "{}", stderr(&output));
    let rejected = entries(&dead);
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["row"]["key"], "k1");
    assert!(rejected[0]["reason"].as_str().unwrap().contains("every field is null"), "{rejected:?}");
    assert_eq!((report["rows_written"].as_u64(), report["steps"][1]["rejected"].as_u64()), (Some(3), Some(1)));
    assert_eq!(hashes(&redis), BTreeSet::from(["k0".to_string(), "k2".to_string(), "k3".to_string()]));
    let k2: Vec<String> = redis::cmd("HGETALL").arg("k2").query(&mut redis.connection()).unwrap();
    assert_eq!(k2, ["b", "y"]);
}

/// Redis killed while a run writes 120,000 rows, back two seconds later, with `retry_seconds =
/// 1` and `on_error = "skip"`: the writes in flight cannot be retried long enough, and the run
/// fails (exit 1) saying how many rows Redis did not acknowledge, instead of exiting 0 with
/// rows in neither Redis nor the dead letter. A lost server is not a bad row: nothing is
/// rejected. The same server gone for good fails the run too, naming it.
#[test]
fn a_redis_outage_past_retry_seconds_fails_the_run_whatever_the_policy() {
    let Some(mut redis) = RedisServer::start() else { return };
    let dir = temp();
    rows_file(dir.path(), 120_000);
    let dead = dir.path().join("rejected.jsonl");
    for (policy, restart) in [
        ("on_error = \"skip\"".to_string(), true),
        (format!("on_error = \"dead-letter\"\ndead_letter = {{ url = \"{}\" }}", dead.display()), false),
    ] {
        redis.restart();
        let spec = redis_spec(dir.path(), &redis.url(), "value = \"label\", retry_seconds = 1", &policy, 1000);
        let mut child = runner().args(["run", "--report", "json"]).arg(&spec).stderr(Stdio::piped()).spawn().unwrap();
        let lines = Lines::of(&mut child);
        wait_until("the run writes", Duration::from_secs(60), || redis.dbsize() > 5_000);
        redis.kill();
        assert!(child.try_wait().unwrap().is_none(), "the run ended before Redis was killed: make it longer");
        if restart {
            std::thread::sleep(Duration::from_secs(2)); // the outage itself: longer than retry_seconds
            redis.restart();
        }
        let status = child.wait().unwrap();
        let err = lines.rest();
        assert_eq!(status.code(), Some(1), "{policy}: {err}");
        let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("{err}"));
        assert!(line.contains(&format!("writing to {}", redis.url())), "{line}");
        assert!(line.contains("rows sent were not acknowledged"), "{line}");
        assert!(line.contains("still failing after 1 s of retries"), "{line}");
        let report: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
        assert_eq!(report["steps"][1]["rejected"], 0, "a lost server rejects no row: {report}");
        assert!(report["rows_written"].as_u64() < report["rows_read"].as_u64(), "{report}");
        assert!(entries(&dead).is_empty(), "nothing dead-lettered for an outage");
    }
}

/// `rows_written` is what the store acknowledged, not what was queued: a Redis out of memory
/// (`maxmemory 1`) refuses every write, and the run fails with 0 rows written.
#[test]
fn rows_written_counts_only_acknowledged_rows() {
    let Some(redis) = RedisServer::start() else { return };
    let dir = temp();
    rows_file(dir.path(), 10);
    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1").query::<()>(&mut redis.connection()).unwrap();
    let spec =
        redis_spec(dir.path(), &redis.url(), "value = \"label\", retry_seconds = 1", "on_error = \"skip\"", 4096);
    let (output, report) = run_json(&spec);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("OOM"), "{}", stderr(&output));
    assert_eq!(report["rows_read"], 10);
    assert_eq!(report["rows_written"], 0, "{report}");
    assert_eq!(redis.dbsize(), 0);
}

/// A dead letter that cannot be written fails the run, naming it: a Redis list whose key holds
/// a string (`WRONGTYPE` on `RPUSH`), a file on a full disk (`/dev/full`), an S3 object on a
/// server that has gone away (put when the run ends). The run's CSV output is then not
/// committed: the dead letters are made durable before the sink's output is.
#[test]
fn a_dead_letter_that_cannot_be_written_fails_the_run() {
    let Some(redis) = RedisServer::start() else { return };
    let mut s3 = S3Server::start();
    s3.bucket("out");
    let s3_table = s3.spec_table() + "timeout_seconds = 1\n";
    s3.stop();
    let dir = temp();
    std::fs::write(dir.path().join("dirty.csv"), "a,b\n1,2\n3\n4,5\n").unwrap();
    redis::cmd("SET").arg("rejected").arg("a string").query::<()>(&mut redis.connection()).unwrap();
    let out = dir.path().join("out.csv");
    for (dead_letter, says) in [
        (format!("{{ url = \"{}\", list = \"rejected\" }}", redis.url()), "writing the dead letter redis://"),
        ("{ url = \"/dev/full\" }".to_string(), "writing the dead letter /dev/full"),
        ("{ url = \"s3://out/rejected.jsonl\" }".to_string(), "writing the dead letter s3://out/rejected.jsonl"),
    ] {
        let spec = dir.path().join("spec.toml");
        std::fs::write(
            &spec,
            format!(
                "{}\n[source]\nkind = \"csv\"\non_error = \"dead-letter\"\ndead_letter = {dead_letter}\n\
                 config = {{ url = \"dirty.csv\" }}\n\n[sink]\nkind = \"csv\"\nconfig = {{ url = \"{}\" }}\n",
                s3_table,
                out.display()
            ),
        )
        .unwrap();
        let output = runner().arg("run").arg(&spec).output().unwrap();
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{dead_letter}: {err}");
        let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("{err}"));
        assert!(line.contains("step `source`") && line.contains(says), "{line}");
        assert!(!out.exists(), "{dead_letter}: the output of a failed run was committed");
    }
}
