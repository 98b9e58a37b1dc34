//! Metrics pushed to a real Prometheus Pushgateway (Debian's `prometheus-pushgateway`, started
//! on a loopback port): each shard's counts land in its own group, equal to its report; a run
//! that fails pushes its failure and its counts so far without erasing the last success; a
//! gateway that is down costs the run one warning, not its success.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::services::{Pushgateway, RedisServer};
use common::{Lines, plugin_dir, plugins, root, runner, stderr, temp, wait_until};

/// `dir/spec.toml` (pipeline `metered`): `rows.csv` (ids 0..rows) in splits of 64 bytes, 50
/// rows a batch, to `discard`.
fn spec(dir: &Path, rows: usize) -> PathBuf {
    let body: String = (0..rows).map(|i| format!("{i},v{i}\n")).collect();
    std::fs::write(dir.join("rows.csv"), format!("id,value\n{body}")).unwrap();
    let path = dir.join("spec.toml");
    std::fs::write(
        &path,
        "[pipeline]\nname = \"metered\"\nbatch_rows = 50\n\n[source]\nkind = \"csv\"\n\
         config = { url = \"rows.csv\", split_bytes = 64 }\n\n[sink]\nkind = \"discard\"\n",
    )
    .unwrap();
    path
}

/// `runner run --report json --metrics GATEWAY ARGS... SPEC`: its exit code and report.
fn run_pushing(gateway: &str, args: &[&str], spec: &Path) -> (Option<i32>, serde_json::Value) {
    let output =
        runner().args(["run", "--report", "json", "--metrics", gateway]).args(args).arg(spec).output().unwrap();
    let report = serde_json::from_str(stderr(&output).lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {}", stderr(&output)));
    (output.status.code(), report)
}

/// After a 4-shard run, the gateway holds each shard's counters, equal to that shard's
/// `--report json` counts, and its last success.
#[test]
fn each_shard_pushes_its_own_counts() {
    let Some(gateway) = Pushgateway::start() else { return };
    let dir = temp();
    let spec = spec(dir.path(), 1000);
    let mut read = 0;
    for index in 0..4 {
        let shard = format!("{index}/4");
        let (code, report) = run_pushing(&gateway.url(), &["--shard", &shard], &spec);
        assert_eq!(code, Some(0), "{report}");
        let group = format!("shard=\"{index}\"");
        let labels = |step: &'static str| ["job=\"metered\"", group.as_str(), step];
        let source = gateway.value("runner_rows_out_total", &labels("step=\"source\""));
        let sink = gateway.value("runner_rows_out_total", &labels("step=\"sink\""));
        assert_eq!(source, report["rows_read"].as_f64(), "shard {index}: {report}");
        assert_eq!(sink, report["rows_written"].as_f64(), "shard {index}: {report}");
        assert!(report["rows_read"].as_u64().unwrap() > 0, "every shard reads some rows: {report}");
        let at = gateway.value("runner_last_success_timestamp_seconds", &["job=\"metered\"", group.as_str()]);
        assert!(at.is_some_and(|at| at > 1.7e9), "shard {index}: {}", gateway.metrics());
        read += report["rows_read"].as_u64().unwrap();
    }
    assert_eq!(read, 1000);
}

/// A run that fails (Redis stopped mid-run, `retry_seconds = 1`) pushes its failure and its
/// counts so far; the earlier run's last-success gauge is still there, unchanged.
#[test]
fn a_failed_run_pushes_its_failure_and_keeps_the_last_success() {
    let Some(gateway) = Pushgateway::start() else { return };
    let Some(mut redis) = RedisServer::start() else { return };
    let dir = temp();
    let spec = spec(dir.path(), 120_000);
    let text = std::fs::read_to_string(&spec).unwrap().replace("batch_rows = 50", "batch_rows = 1000").replace(
        "[sink]\nkind = \"discard\"\n",
        &format!(
            "[sink]\nkind = \"redis\"\nconfig = {{ url = \"{}\", key = \"value\", value = \"id\", retry_seconds = 1 }}\n",
            redis.url()
        ),
    );
    std::fs::write(&spec, text).unwrap();
    let group = ["job=\"metered\"", "shard=\"0\""];
    let (code, _) = run_pushing(&gateway.url(), &[], &spec);
    assert_eq!(code, Some(0));
    let success = gateway.value("runner_last_success_timestamp_seconds", &group).expect("a success pushed");

    redis::cmd("FLUSHALL").query::<()>(&mut redis.connection()).unwrap();
    let mut child = runner()
        .args(["run", "--report", "json", "--metrics", &gateway.url()])
        .arg(&spec)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::of(&mut child);
    wait_until("the run writes", Duration::from_secs(60), || redis.dbsize() > 5_000);
    redis.kill();
    assert!(child.try_wait().unwrap().is_none(), "the run ended before Redis was killed: make it longer");
    let status = child.wait().unwrap();
    let err = lines.rest();
    assert_eq!(status.code(), Some(1), "{err}");
    let report: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    let failure = gateway.value("runner_last_failure_timestamp_seconds", &group);
    assert!(failure.is_some_and(|at| at >= success), "{}", gateway.metrics());
    assert_eq!(gateway.value("runner_last_success_timestamp_seconds", &group), Some(success));
    let sink = gateway.value("runner_rows_out_total", &[group[0], group[1], "step=\"sink\""]);
    assert_eq!(sink, report["rows_written"].as_f64(), "the failed run's counts so far: {report}");
    assert!(report["rows_written"].as_u64().unwrap() < 120_000, "{report}");
}

/// A gateway that is not there: the run succeeds, with one warning however many pushes fail
/// (a push a second over a run of about 3 s).
#[test]
fn a_pushgateway_that_is_down_is_one_warning() {
    plugins();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = temp();
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "[pipeline]\nbatch_rows = 10\nplugin_dir = \"{}\"\n\n[source]\nkind = \"csv\"\nconfig = {{ url = \"{}\" }}\n\n\
             [[transform]]\nplugin = \"hostile\"\nworkers = 1\nconfig = {{ attack = \"slow\", value = \"200\" }}\n\n\
             [sink]\nkind = \"discard\"\n",
            plugin_dir().display(),
            root().join("models/iris/iris.csv").display()
        ),
    )
    .unwrap();
    let gateway = format!("http://127.0.0.1:{port}");
    let output = runner().args(["run", "--metrics", &gateway, "--metrics-seconds", "1"]).arg(&spec).output().unwrap();
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|line| line.contains("pushing metrics to")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("WARN") && warnings[0].contains(&gateway), "{}", warnings[0]);
}

/// Into Redis, the round trips are counted: 1,000 rows in batches of 50, each batch one
/// round trip (one `MSET` of 50 keys, under `pipeline = 100`), none sent again.
#[test]
fn redis_round_trips_are_counted() {
    let Some(gateway) = Pushgateway::start() else { return };
    let Some(redis) = RedisServer::start() else { return };
    let dir = temp();
    let spec = spec(dir.path(), 1000);
    let text = std::fs::read_to_string(&spec).unwrap().replace(
        "[sink]\nkind = \"discard\"\n",
        &format!(
            "[sink]\nkind = \"redis\"\nconfig = {{ url = \"{}\", key = \"value\", value = \"id\" }}\n",
            redis.url()
        ),
    );
    std::fs::write(&spec, text).unwrap();
    let (code, report) = run_pushing(&gateway.url(), &[], &spec);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(redis.dbsize(), 1000);
    let group = ["job=\"metered\"", "shard=\"0\""];
    assert_eq!(gateway.value("runner_redis_round_trips_total", &group), Some(20.0), "{}", gateway.metrics());
    assert_eq!(gateway.value("runner_redis_retries_total", &group), Some(0.0));
}
