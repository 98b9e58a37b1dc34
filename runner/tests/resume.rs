//! Checkpoints of planned runs: a shard killed part way, then rerun with the same plan, skips
//! the splits whose rows the sink acknowledged and leaves what an uninterrupted run leaves;
//! no split is recorded before its rows are acknowledged (a shard killed while Redis holds its
//! replies, or one that dies between the acknowledgement and the record, loses nothing); a
//! file sink's part is written whole by the rerun; `--restart` reads everything again; a plan
//! in a bucket keeps its checkpoints in the bucket.
//! SETs are counted by Redis (INFO commandstats), not by the runner.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::services::RedisServer;
use common::{runner, stderr, temp};

/// `rows` CSV rows `id,word,x`, with their header.
fn csv_rows(rows: usize) -> String {
    let mut text = String::from("id,word,x\n");
    for i in 0..rows {
        text.push_str(&format!("{i},w{},{}.{}\n", i % 97, i % 1000, i % 7));
    }
    text
}

/// A local input of 200,000 rows cut into 128 KiB splits, a spec reading it into `sink` (a
/// TOML `[sink]` table, after a row key), and a plan of it for two shards; the tests run shard
/// 0, 100,000 rows.
struct Job {
    dir: tempfile::TempDir,
    spec: PathBuf,
    plan: PathBuf,
    /// Shard 0's splits.
    splits: usize,
}

impl Job {
    fn new(sink: &str) -> Job {
        let dir = temp();
        std::fs::write(dir.path().join("rows.csv"), csv_rows(200_000)).unwrap();
        let spec = dir.path().join("spec.toml");
        let text = format!(
            "[source]\nkind = \"csv\"\nconfig = {{ url = \"rows.csv\", split_bytes = 131072 }}\n\n\
             [[transform]]\nkind = \"row-key\"\nconfig = {{ columns = [\"id\", \"x\"] }}\n\n{sink}"
        );
        std::fs::write(&spec, text).unwrap();
        let plan = dir.path().join("job.plan");
        let made = runner().arg("plan").arg(&spec).args(["--shards", "2", "--out"]).arg(&plan).output().unwrap();
        assert!(made.status.success(), "runner plan: {}", stderr(&made));
        let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
        let splits = file["source"]["splits"].as_array().unwrap().iter().filter(|s| s["shard"] == 0).count();
        assert!(splits >= 8, "the input is cut into splits: {splits}");
        Job { dir, spec, plan, splits }
    }

    fn command(&self, extra: &[&str]) -> std::process::Command {
        let mut command = runner();
        command.args(["run", "--report", "json"]).arg(&self.spec).arg("--plan").arg(&self.plan);
        command.args(["--shard", "0/2"]).args(extra);
        command
    }

    fn run(&self, extra: &[&str]) -> Output {
        self.command(extra).output().unwrap()
    }

    fn start(&self) -> Child {
        self.command(&[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
    }

    /// The shard's checkpoint folder (`job.plan.checkpoints/<plan id>/shard-0-of-2`).
    fn folder(&self) -> PathBuf {
        let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&self.plan).unwrap()).unwrap();
        self.dir.path().join("job.plan.checkpoints").join(file["id"].as_str().unwrap()).join("shard-0-of-2")
    }

    /// The plan's indices of the splits recorded done.
    fn recorded_splits(&self) -> Vec<usize> {
        let entries: Vec<std::fs::DirEntry> =
            std::fs::read_dir(self.folder()).map(|entries| entries.flatten().collect()).unwrap_or_default();
        let names = entries.iter().filter(|e| e.path().is_file()).map(|e| e.file_name().to_string_lossy().into_owned());
        names.filter_map(|name| name.strip_prefix("split-")?.parse().ok()).collect()
    }

    /// How many splits are recorded done.
    fn recorded(&self) -> usize {
        self.recorded_splits().len()
    }
}

fn ok(output: Output, what: &str) -> Output {
    assert!(output.status.success(), "{what}: {}", stderr(&output));
    output
}

/// The JSON report: the last line of standard error.
fn report(output: &Output) -> serde_json::Value {
    let text = stderr(output);
    serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A Redis sink into database `db`, SETting each row's key to its id: `pipeline` keys per
/// round trip, `in_flight` round trips at a time (few and one, so that a run lasts long enough
/// to be killed part way; many, so that more than a split is sent ahead of the replies).
fn redis_sink(redis: &RedisServer, db: u32, (pipeline, in_flight): (usize, usize)) -> String {
    format!(
        "[sink]\nkind = \"redis\"\nconfig = {{ url = \"redis://127.0.0.1:{}/{db}\", key = \"key\", value = \"id\", \
         pipeline = {pipeline}, in_flight = {in_flight} }}\n",
        redis.port
    )
}

/// Slow enough to be killed part way.
const SLOW: (usize, usize) = (10, 1);

/// Keys written since the last reset, as Redis counts them: calls of SET, and keys of MSET.
fn sets(redis: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut redis.connection()).unwrap();
    let calls = |command: &str| -> u64 {
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    calls("set") + calls("mset")
}

fn reset_stats(redis: &RedisServer) {
    redis::cmd("CONFIG").arg("RESETSTAT").query::<()>(&mut redis.connection()).unwrap();
}

fn wait_until(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until `child` has recorded at least `splits` splits, then kills it (SIGKILL).
fn kill_after(job: &Job, child: &mut Child, splits: usize) {
    wait_until("the shard to record enough splits", Duration::from_secs(60), || {
        assert!(child.try_wait().unwrap().is_none(), "the shard finished before it could be killed");
        job.recorded() >= splits
    });
    child.kill().unwrap();
    child.wait().unwrap();
}

/// What an uninterrupted run of `job` leaves in database 1, and the SETs it took.
fn uninterrupted(redis: &RedisServer, window: (usize, usize)) -> (Vec<(String, String)>, u64) {
    let job = Job::new(&redis_sink(redis, 1, window));
    reset_stats(redis);
    ok(job.run(&[]), "an uninterrupted run");
    let contents = redis.contents_of(1);
    assert!(contents.len() > 90_000, "{} keys", contents.len());
    (contents, sets(redis))
}

/// Killed (SIGKILL) once about half its splits are recorded, the shard reruns with the same
/// plan: it skips them (the report says so), sends at most 60% of an uninterrupted run's SETs,
/// and Redis holds exactly what an uninterrupted run leaves. A rerun after that does nothing;
/// `--restart` sends every SET again.
#[test]
fn a_killed_shard_resumes_where_it_stopped() {
    let Some(redis) = RedisServer::start() else {
        return common::skip("redis-server", "apt-get install redis-server");
    };
    let (expected, all_sets) = uninterrupted(&redis, SLOW);

    let job = Job::new(&redis_sink(&redis, 2, SLOW));
    let mut child = job.start();
    kill_after(&job, &mut child, job.splits.div_ceil(2));
    let recorded = job.recorded();
    assert!(recorded < job.splits, "killed before the end");

    reset_stats(&redis);
    let rerun = ok(job.run(&[]), "the rerun");
    let resumed = &report(&rerun)["resumed"];
    assert_eq!(resumed["done"].as_u64(), Some(recorded as u64), "{resumed}");
    assert_eq!(resumed["splits"].as_u64(), Some(job.splits as u64), "{resumed}");
    let rerun_sets = sets(&redis);
    assert!(
        rerun_sets as f64 <= 0.6 * all_sets as f64,
        "the rerun sent {rerun_sets} SETs, an uninterrupted run {all_sets}"
    );
    assert!(redis.contents_of(2) == expected, "Redis differs from an uninterrupted run's");

    reset_stats(&redis);
    let again = ok(job.run(&[]), "a run of a shard already done");
    assert_eq!(report(&again)["resumed"]["done"].as_u64(), Some(job.splits as u64));
    assert_eq!(sets(&redis), 0, "a shard already done writes nothing");
    assert!(stderr(&again).contains("already done"), "{}", stderr(&again));

    reset_stats(&redis);
    let restarted = ok(job.run(&["--restart"]), "--restart");
    assert_eq!(report(&restarted)["resumed"]["done"].as_u64(), Some(0));
    assert_eq!(sets(&redis), all_sets, "--restart writes every row again");
}

/// While Redis holds back its replies (`CLIENT PAUSE ... WRITE`: the commands wait, unanswered),
/// the shard, which sends more than a split's rows ahead of the replies, records no split whose
/// rows Redis does not hold; killed then, it reruns to what an uninterrupted run leaves.
#[test]
fn no_split_is_recorded_before_its_rows_are_acknowledged() {
    let Some(redis) = RedisServer::start() else {
        return common::skip("redis-server", "apt-get install redis-server");
    };
    // 12,800 rows in flight at most: more than a split's (131,072 bytes, some 7,500 rows).
    const WIDE: (usize, usize) = (200, 64);
    let (expected, _) = uninterrupted(&redis, WIDE);

    let job = Job::new(&redis_sink(&redis, 2, WIDE));
    let mut child = job.start();
    // Paused once the first rows are in, so the shard sends past the end of its first split
    // while Redis answers nothing.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/2", redis.port)).unwrap();
    let mut connection = client.get_connection().unwrap();
    wait_until("the first rows written", Duration::from_secs(60), || {
        assert!(child.try_wait().unwrap().is_none(), "the shard finished before Redis was paused");
        redis::cmd("DBSIZE").query::<u64>(&mut connection).unwrap() > 0
    });
    redis::cmd("CLIENT").arg("PAUSE").arg(10000).arg("WRITE").query::<()>(&mut redis.connection()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Reads go on while writes wait: every id of every split recorded is in Redis.
    let held: std::collections::HashSet<String> = redis.contents_of(2).into_iter().map(|(_, id)| id).collect();
    let text = std::fs::read_to_string(job.dir.path().join("rows.csv")).unwrap();
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&job.plan).unwrap()).unwrap();
    let splits = file["source"]["splits"].as_array().unwrap();
    let recorded = job.recorded_splits();
    for &k in &recorded {
        let (start, end) = (splits[k]["start"].as_u64().unwrap() as usize, splits[k]["end"].as_u64().unwrap() as usize);
        // A line belongs to the split it starts in.
        let mut at = text.find('\n').unwrap() + 1;
        for line in text[at..].lines() {
            if (start..end).contains(&at) {
                let id = line.split(',').next().unwrap();
                assert!(held.contains(id), "split {k} is recorded, but Redis does not hold row {id}");
            }
            at += line.len() + 1;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    redis::cmd("CLIENT").arg("UNPAUSE").query::<()>(&mut redis.connection()).unwrap();
    assert!(recorded.len() < job.splits, "killed before the end");

    ok(job.run(&[]), "the rerun");
    assert!(redis.contents_of(2) == expected, "Redis differs from an uninterrupted run's");
}

/// A shard that dies after Redis acknowledged a split's rows but before the split is recorded
/// (here the record cannot be written: a folder stands where each record would go, so the run
/// fails, exit 1, naming the checkpoints, once it has written a split): the next rerun writes
/// that split again, and Redis ends as an uninterrupted run leaves it.
#[test]
fn a_split_acknowledged_but_not_recorded_is_written_again() {
    let Some(redis) = RedisServer::start() else {
        return common::skip("redis-server", "apt-get install redis-server");
    };
    let (expected, _) = uninterrupted(&redis, SLOW);

    let job = Job::new(&redis_sink(&redis, 2, SLOW));
    let mut child = job.start();
    kill_after(&job, &mut child, 2);
    let recorded = job.recorded();
    let blocked: Vec<PathBuf> =
        (0..job.splits).map(|k| job.folder().join(format!("split-{k}"))).filter(|path| !path.exists()).collect();
    for path in &blocked {
        std::fs::create_dir(path).unwrap();
    }
    reset_stats(&redis);
    let output = job.run(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("checkpoints"), "{}", stderr(&output));
    assert!(sets(&redis) > 0, "the failed run wrote a split before it tried to record it");
    assert_eq!(job.recorded(), recorded);
    for path in &blocked {
        std::fs::remove_dir(path).unwrap();
    }

    let rerun = ok(job.run(&[]), "the rerun");
    assert_eq!(report(&rerun)["resumed"]["done"].as_u64(), Some(recorded as u64));
    assert!(redis.contents_of(2) == expected, "Redis differs from an uninterrupted run's");
}

/// A file sink publishes its part only when the run commits, so the shard is recorded done only
/// then: killed part way, the rerun writes the whole part again, every row once; a rerun after
/// that leaves the part as it is.
#[test]
fn a_killed_shard_with_a_file_sink_writes_its_part_whole() {
    let job = Job::new("[sink]\nkind = \"csv\"\nconfig = { url = \"out/part-{shard}.csv\" }\n");
    let out = job.dir.path().join("out");
    let part = out.join("part-0.csv");
    ok(job.run(&[]), "an uninterrupted run");
    let expected = std::fs::read(&part).unwrap();
    std::fs::remove_file(&part).unwrap();
    ok(job.run(&["--restart"]), "a run from the start");
    assert_eq!(std::fs::read(&part).unwrap(), expected);
    std::fs::remove_file(&part).unwrap();

    let mut child = job.command(&["--restart"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_until("the part to be written", Duration::from_secs(60), || {
        assert!(child.try_wait().unwrap().is_none(), "the shard finished before it could be killed");
        common::files_named(&out, "part").iter().any(|name| name != "part-0.csv")
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!part.exists(), "a killed run publishes no part");
    assert_eq!(job.recorded(), 0, "a file sink records no split before it commits");

    let rerun = ok(job.run(&[]), "the rerun");
    assert_eq!(report(&rerun)["resumed"]["done"].as_u64(), Some(0));
    assert!(std::fs::read(&part).unwrap() == expected, "the rerun's part differs from an uninterrupted run's");

    let modified = std::fs::metadata(&part).unwrap().modified().unwrap();
    let again = ok(job.run(&[]), "a run of a shard already done");
    assert_eq!(report(&again)["resumed"]["done"].as_u64(), Some(job.splits as u64));
    assert_eq!(std::fs::metadata(&part).unwrap().modified().unwrap(), modified, "the part is left as it was");
}

/// `--checkpoint` puts the checkpoints elsewhere; `--restart` and `--checkpoint` need `--plan`.
#[test]
fn checkpoints_go_where_they_are_told() {
    let job = Job::new("[sink]\nkind = \"discard\"\n");
    let elsewhere = job.dir.path().join("elsewhere");
    let output = ok(job.run(&["--checkpoint", elsewhere.to_str().unwrap()]), "--checkpoint");
    let at = report(&output)["resumed"]["checkpoints"].as_str().unwrap().to_string();
    assert!(at.contains("elsewhere"), "{at}");
    assert!(!job.dir.path().join("job.plan.checkpoints").exists());
    assert!(common::files_named(Path::new(&at), "complete").len() == 1, "the shard's completion is recorded: {at}");
    let again = ok(job.run(&["--checkpoint", elsewhere.to_str().unwrap()]), "again");
    assert_eq!(report(&again)["resumed"]["done"].as_u64(), Some(job.splits as u64));

    let output = runner().arg("run").arg(&job.spec).arg("--restart").output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

/// A plan in a bucket keeps its checkpoints beside it, in the bucket: a shard records its
/// splits and its completion there (with the spec's `[s3]` credentials), and a rerun finds them.
#[test]
fn checkpoints_beside_a_plan_in_a_bucket() {
    let dir = temp();
    let s3 = common::services::S3Server::start();
    s3.bucket("batch");
    let rows = dir.path().join("rows.csv");
    std::fs::write(&rows, csv_rows(50_000)).unwrap();
    s3.put("batch", "in/rows.csv", &rows);
    let spec = dir.path().join("spec.toml");
    let text = format!(
        "{}\n[source]\nkind = \"csv\"\nconfig = {{ url = \"s3://batch/in/rows.csv\", split_bytes = 131072 }}\n\n\
         [sink]\nkind = \"discard\"\n",
        s3.spec_table()
    );
    std::fs::write(&spec, text).unwrap();
    let plan = "s3://batch/plans/job.plan";
    let made = runner().arg("plan").arg(&spec).args(["--shards", "2", "--out", plan]).output().unwrap();
    assert!(made.status.success(), "runner plan: {}", stderr(&made));
    let run =
        || runner().args(["run", "--report", "json"]).arg(&spec).args(["--plan", plan, "--shard", "1/2"]).output();
    let first = ok(run().unwrap(), "shard 1/2");
    let at = report(&first)["resumed"]["checkpoints"].as_str().unwrap().to_string();
    assert!(at.starts_with("s3://batch/plans/job.plan.checkpoints/"), "{at}");
    let keys = s3.keys("batch", "plans/job.plan.checkpoints/");
    assert!(keys.iter().any(|k| k.ends_with("/shard-1-of-2/complete")), "{keys:?}");
    let again = ok(run().unwrap(), "shard 1/2 again");
    let resumed = &report(&again)["resumed"];
    assert!(resumed["done"].as_u64().unwrap() > 0 && resumed["done"] == resumed["splits"], "{resumed}");
}
