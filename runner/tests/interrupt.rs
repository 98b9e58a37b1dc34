//! A signal stops a run and commits nothing: SIGTERM (143) or SIGINT (130) stops reading, the
//! batches in flight go through, the sink is aborted (no file renamed into place, no upload
//! completed), the partial summary is printed; a second signal abandons the run at once. Each
//! test waits for an event of the run (a file growing, a log line) before it signals, never for
//! a fixed time.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::services::{RedisServer, S3Server};
use common::{Lines, files_named, plugin_dir, plugins, root, runner, signal, temp, wait_until};

/// A pipeline over the Iris rows in batches of 10, each held `delay_ms` by the hostile plugin,
/// into `sink` (its TOML table's body).
fn slow_spec(dir: &Path, delay_ms: u32, sink: &str, extra: &str) -> std::path::PathBuf {
    let spec = dir.join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "[pipeline]\nbatch_rows = 10\nplugin_dir = \"{}\"\n\n{extra}\n[source]\nkind = \"csv\"\nconfig = {{ url = \"{}\" }}\n\n\
             [[transform]]\nplugin = \"hostile\"\nworkers = 1\nconfig = {{ attack = \"slow\", value = \"{delay_ms}\" }}\n\n\
             [sink]\n{sink}\n",
            plugin_dir().display(),
            root().join("models/iris/iris.csv").display(),
        ),
    )
    .unwrap();
    // Compile the plugin first, so the run starts at once.
    assert!(runner().args(["validate", spec.to_str().unwrap()]).stdout(Stdio::null()).status().unwrap().success());
    spec
}

/// The summary's count of `what` (`rows read`, `rows written`).
fn count(err: &str, what: &str) -> usize {
    let summary = err.lines().find(|l| l.starts_with("pipeline `spec` ")).unwrap_or_else(|| panic!("{err}"));
    let at = summary.find(what).unwrap_or_else(|| panic!("no `{what}` in {summary}"));
    summary[..at].trim_end().rsplit([' ', ':']).next().unwrap().parse().unwrap()
}

/// SIGTERM and SIGINT while a CSV sink is half written: exit 143 or 130, no output file, no
/// temporary left behind, and a summary that says what was read and that nothing was written.
/// Signalled once the temporary file holds rows (the sink has written some).
#[test]
fn a_signal_mid_run_commits_no_file() {
    plugins();
    for (sig, name, code) in [(libc::SIGTERM, "SIGTERM", 143), (libc::SIGINT, "SIGINT", 130)] {
        let dir = temp();
        let out = dir.path().join("out.csv");
        let spec =
            slow_spec(dir.path(), 150, &format!("kind = \"csv\"\nconfig = {{ url = \"{}\" }}", out.display()), "");
        let mut child = runner().args(["run", spec.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap();
        let lines = Lines::of(&mut child);
        wait_until("the sink writes its first rows", Duration::from_secs(60), || {
            files_named(dir.path(), ".partial")
                .iter()
                .any(|name| std::fs::read_to_string(dir.path().join(name)).is_ok_and(|text| text.lines().count() > 1))
        });
        signal(child.id(), sig);
        let status = child.wait().unwrap();
        let err = lines.rest();
        assert_eq!(status.code(), Some(code), "{name}: {err}");
        assert!(err.contains(&format!("{name}: stopping after the batches in flight, committing nothing")), "{err}");
        assert!(err.contains(&format!("error: interrupted by {name}: stopped reading and committed nothing")), "{err}");
        assert!(!out.exists(), "{name}: a stopped run committed {}", out.display());
        assert_eq!(files_named(dir.path(), ".partial"), Vec::<String>::new(), "{name}: temporaries left");
        let (read, written) = (count(&err, " rows read"), count(&err, " rows written"));
        assert!(read > 0 && read < 150, "{name}: {err}");
        assert_eq!(written, 0, "nothing was committed: {err}");
    }
}

/// SIGTERM while a CSV sink uploads to S3: the multipart upload is aborted, so no object (not
/// even a partial one) appears under the key, and nothing of the upload is left on the server.
#[test]
fn a_signal_mid_upload_leaves_no_object() {
    plugins();
    let s3 = S3Server::start();
    s3.bucket("out");
    let dir = temp();
    let sink = "kind = \"csv\"\nconfig = { url = \"s3://out/scored.csv\" }";
    let spec = slow_spec(dir.path(), 150, sink, &s3.spec_table());
    let mut child = runner()
        .args(["run", spec.to_str().unwrap()])
        .env("RUST_LOG", "runner=debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut child);
    // The upload is open once the steps are: the first batch then takes 150 ms in the plugin.
    lines.wait_for("the steps are open", Duration::from_secs(60));
    signal(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();
    let err = lines.rest();
    assert_eq!(status.code(), Some(143), "{err}");
    assert_eq!(s3.keys("out", ""), Vec::<String>::new(), "nothing stored: {err}");
    assert_eq!(s3.get("out", "scored.csv"), None);
}

/// A signal while the steps open (a plugin whose `open` never returns, with no deadline) ends
/// the run at once, with its summary and exit 143.
#[test]
fn a_signal_while_the_steps_open_stops_the_run() {
    plugins();
    let dir = temp();
    let spec = dir.path().join("spec.toml");
    let text = |attack: &str| {
        format!(
            "[pipeline]\nplugin_dir = \"{}\"\n\n[source]\nkind = \"csv\"\nconfig = {{ url = \"{}\" }}\n\n\
             [[transform]]\nplugin = \"hostile\"\nworkers = 1\nlimits = {{ call_seconds = 0 }}\n\
             config = {{ attack = \"{attack}\", call = \"open\" }}\n\n[sink]\nkind = \"discard\"\n",
            plugin_dir().display(),
            root().join("models/iris/iris.csv").display(),
        )
    };
    // Compiled first, with an attack that lets `open` return.
    std::fs::write(&spec, text("none")).unwrap();
    assert!(runner().args(["validate", spec.to_str().unwrap()]).stdout(Stdio::null()).status().unwrap().success());
    std::fs::write(&spec, text("sleep")).unwrap();
    let mut child = runner()
        .args(["run", spec.to_str().unwrap()])
        .env("RUST_LOG", "runner=debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut child);
    lines.wait_for("opening the steps", Duration::from_secs(60));
    let signalled = Instant::now();
    signal(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();
    let err = lines.rest();
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(signalled.elapsed() < Duration::from_secs(20), "took {:?} to stop", signalled.elapsed());
    assert!(err.contains("error: interrupted by SIGTERM"), "{err}");
    assert!(err.contains("pipeline `spec` FAILED"), "the summary is printed: {err}");
}

/// A signal while the Redis sink waits for its last acknowledgements (the server paused once the
/// steps are open, so none come): the run stops within its grace period instead of waiting out
/// `retry_seconds`, exits 143, and counts as written only rows Redis acknowledged: no more than
/// it holds.
#[test]
fn a_signal_while_redis_acknowledges_stops_the_wait() {
    let Some(redis) = RedisServer::start() else { return };
    plugins();
    let dir = temp();
    let data = dir.path().join("rows.csv");
    let rows: String = (0..3000).map(|i| format!("k{i},{i}\n")).collect();
    std::fs::write(&data, format!("key,value\n{rows}")).unwrap();
    let spec = dir.path().join("spec.toml");
    // 30 batches, each held 50 ms by the plugin: every row is sent (they all fit in flight)
    // after Redis is paused.
    std::fs::write(
        &spec,
        format!(
            "[pipeline]\nbatch_rows = 100\nplugin_dir = \"{}\"\n\n[source]\nkind = \"csv\"\n\
             config = {{ url = \"{}\", columns = {{ key = \"string\" }} }}\n\n\
             [[transform]]\nplugin = \"hostile\"\nworkers = 1\nconfig = {{ attack = \"slow\", value = \"50\" }}\n\n\
             [sink]\nkind = \"redis\"\nconfig = {{ url = \"{}\", value = \"value\", pipeline = 10, in_flight = 1000 }}\n",
            plugin_dir().display(),
            data.display(),
            redis.url()
        ),
    )
    .unwrap();
    assert!(runner().args(["validate", spec.to_str().unwrap()]).stdout(Stdio::null()).status().unwrap().success());
    let mut child = runner()
        .args(["run", "--report", "json", spec.to_str().unwrap()])
        .env("RUST_LOG", "runner=debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut child);
    lines.wait_for("the steps are open", Duration::from_secs(60));
    redis.pause(true);
    lines.wait_for("waiting for the sink's acknowledgements", Duration::from_secs(60));
    let signalled = Instant::now();
    signal(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();
    let waited = signalled.elapsed();
    redis.pause(false);
    let err = lines.rest();
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(waited < Duration::from_secs(10), "waited {waited:?} after the signal: {err}");
    let report: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    let written = report["rows_written"].as_u64().unwrap() as usize;
    assert_eq!(report["rows_read"], 3000, "{report}");
    assert!(written < 3000, "rows counted as written that Redis never acknowledged: {report}");
    wait_until("Redis works through what it was sent", Duration::from_secs(30), || redis.dbsize() >= written);
}

/// Plugins without a deadline that never return hold every worker of the runner's async
/// runtime; signals are watched on a thread of their own, so a second one still ends the run.
#[test]
fn a_second_signal_ends_a_run_whose_plugins_never_return() {
    plugins();
    let dir = temp();
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "[pipeline]\nbatch_rows = 10\nplugin_dir = \"{}\"\n\n[source]\nkind = \"csv\"\nconfig = {{ url = \"{}\" }}\n\n\
             [[transform]]\nplugin = \"hostile\"\nworkers = 8\nconfig = {{ attack = \"loop\" }}\n\
             limits = {{ call_seconds = 0 }}\n\n[sink]\nkind = \"discard\"\n",
            plugin_dir().display(),
            root().join("models/iris/iris.csv").display(),
        ),
    )
    .unwrap();
    assert!(runner().args(["validate", spec.to_str().unwrap()]).stdout(Stdio::null()).status().unwrap().success());
    let mut child = runner()
        .args(["run", spec.to_str().unwrap()])
        .env("RUST_LOG", "runner=debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut child);
    lines.wait_for("the steps are open", Duration::from_secs(60));
    signal(child.id(), libc::SIGTERM);
    lines.wait_for("SIGTERM: stopping after the batches in flight", Duration::from_secs(10));
    signal(child.id(), libc::SIGTERM);
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("the run did not end after two SIGTERMs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    let err = lines.rest();
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(err.contains("abandoning the run"), "{err}");
}
