//! SIGTERM (or Ctrl-C) stops a run cleanly: reading stops, batches already read go through,
//! the sink flushes what it accepted, the partial summary is printed, and the exit is non-zero.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{plugin_dir, plugins, root, runner, temp};

#[test]
fn sigterm_finishes_in_flight_batches_and_flushes_the_sink() {
    plugins();
    let dir = temp();
    let out = dir.path().join("out.csv");
    let spec = dir.path().join("spec.toml");
    // 15 batches of 10 rows, each held 150 ms by the plugin: about 2 s in all.
    std::fs::write(
        &spec,
        format!(
            "[pipeline]\nbatch_rows = 10\nplugin_dir = \"{}\"\n\n[source]\nkind = \"csv\"\nconfig = {{ url = \"{}\" }}\n\n\
             [[transform]]\nplugin = \"hostile\"\nworkers = 1\nconfig = {{ attack = \"slow\", value = \"150\" }}\n\n\
             [sink]\nkind = \"csv\"\nconfig = {{ url = \"{}\" }}\n",
            plugin_dir().display(),
            root().join("models/iris/iris.csv").display(),
            out.display()
        ),
    )
    .unwrap();
    // Compile the plugin first, so the timing below is the run's.
    assert!(runner().args(["validate", spec.to_str().unwrap()]).status().unwrap().success());
    let child = runner().args(["run", spec.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(143), "{err}");
    assert!(err.contains("SIGTERM: stopping after the batches in flight"), "{err}");
    assert!(err.contains("error: interrupted by SIGTERM: stopped reading"), "{err}");

    // The summary: fewer rows than the file holds, and every row read was written.
    let summary = err.lines().find(|l| l.starts_with("pipeline `spec` FAILED")).unwrap_or_else(|| panic!("{err}"));
    let count = |what: &str| -> usize {
        let at = summary.find(what).unwrap();
        summary[..at].trim_end().rsplit([' ', ':']).next().unwrap().parse().unwrap()
    };
    let (read, written) = (count(" rows read"), count(" rows written"));
    assert!(read > 0 && read < 150, "{summary}");
    assert_eq!(read, written, "batches in flight are finished: {summary}");

    // The sink flushed exactly those rows, in order.
    let text = std::fs::read_to_string(&out).unwrap();
    let iris = std::fs::read_to_string(root().join("models/iris/iris.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), written + 1, "header and {written} rows");
    assert_eq!(lines, iris.lines().take(written + 1).collect::<Vec<_>>());
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
    assert!(runner().args(["validate", spec.to_str().unwrap()]).status().unwrap().success());
    let mut child = runner().args(["run", spec.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..2 {
        let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(killed.success());
        std::thread::sleep(Duration::from_millis(300));
    }
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("the run did not end after two SIGTERMs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(143), "{err}");
    assert!(err.contains("SIGTERM: stopping after the batches in flight"), "{err}");
    assert!(err.contains("abandoning the run"), "{err}");
}
