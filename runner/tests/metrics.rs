//! Metrics pushed to a real Prometheus Pushgateway (Debian's `prometheus-pushgateway`, started
//! on a loopback port): each shard's counts land in its own group, equal to its report; a run
//! that fails pushes its failure and its counts so far without erasing the last success; a
//! gateway that is down costs the run one warning, not its success.

mod common;

use std::path::{Path, PathBuf};

use common::services::Pushgateway;
use common::{plugin_dir, plugins, root, runner, stderr, temp};

/// `dir/spec.toml` (pipeline `metered`): `rows.csv` (ids 0..rows, and at `bad` a line with a
/// field missing) in splits of 64 bytes, 50 rows a batch, to `discard`.
fn spec(dir: &Path, rows: usize, bad: Option<usize>) -> PathBuf {
    let body: String =
        (0..rows).map(|i| if Some(i) == bad { format!("{i}\n") } else { format!("{i},v{i}\n") }).collect();
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
    let spec = spec(dir.path(), 1000, None);
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

/// A run that fails (a malformed line, under the default policy) pushes its failure and its
/// counts so far; the earlier run's last-success gauge is still there, unchanged.
#[test]
fn a_failed_run_pushes_its_failure_and_keeps_the_last_success() {
    let Some(gateway) = Pushgateway::start() else { return };
    let dir = temp();
    let group = ["job=\"metered\"", "shard=\"0\""];
    let (code, _) = run_pushing(&gateway.url(), &[], &spec(dir.path(), 1000, None));
    assert_eq!(code, Some(0));
    let success = gateway.value("runner_last_success_timestamp_seconds", &group).expect("a success pushed");

    let (code, report) = run_pushing(&gateway.url(), &[], &spec(dir.path(), 1000, Some(700)));
    assert_eq!(code, Some(1), "{report}");
    let failure = gateway.value("runner_last_failure_timestamp_seconds", &group);
    assert!(failure.is_some_and(|at| at >= success), "{}", gateway.metrics());
    assert_eq!(gateway.value("runner_last_success_timestamp_seconds", &group), Some(success));
    let source = gateway.value("runner_rows_out_total", &[group[0], group[1], "step=\"source\""]);
    assert_eq!(source, report["rows_read"].as_f64(), "the failed run's counts so far: {report}");
    assert!(report["rows_read"].as_u64().unwrap() < 1000, "{report}");
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
