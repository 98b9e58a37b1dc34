//! Containment of what a plugin does with time and output, and of the compiled-plugin cache:
//! a plugin blocked in a host call is stopped at its deadline in every call of every kind of
//! step, what it prints is cut and rate-limited, an exit is reported as one, a cache others
//! can write is not trusted, and a config a plugin refuses is a spec error.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{plugin_dir, plugins, root, runner, stderr, stdout, temp};

/// A pipeline over the Iris rows with a hostile step in the role `role`, configured with
/// `config` and `extra` step keys; the other steps are built in.
fn spec(dir: &Path, role: &str, config: &str, extra: &str) -> PathBuf {
    let step = |plugin: &str| format!("plugin = \"{plugin}\"\nconfig = {{ {config} }}\n{extra}\n");
    let csv = format!("kind = \"csv\"\nconfig = {{ url = \"{}\" }}\n", root().join("models/iris/iris.csv").display());
    let (source, transform, sink) = match role {
        "source" => (step("hostile-source"), String::new(), "kind = \"discard\"\n".to_string()),
        "transform" => (
            csv,
            format!("[[transform]]\nname = \"attack\"\nworkers = 1\n{}", step("hostile")),
            "kind = \"discard\"\n".to_string(),
        ),
        "sink" => (csv, String::new(), step("hostile-sink")),
        other => panic!("no role {other}"),
    };
    let text = format!(
        "[pipeline]\nplugin_dir = \"{}\"\n\n[source]\n{source}\n{transform}\n[sink]\n{sink}",
        plugin_dir().display()
    );
    let path = dir.join(format!("{role}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `runner run SPEC`, returning its output and how long it took.
fn timed_run(spec: &Path, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = runner().arg("run").args(args).arg(spec).output().expect("start runner");
    (output, started.elapsed())
}

/// The error line of a failed run.
fn error_line(output: &Output) -> String {
    let err = stderr(output);
    err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {err}")).to_string()
}

/// A plugin that sleeps (blocked in a host call, not computing) in any of its calls is stopped
/// at `call_seconds` of wall-clock time, with the message of a deadline, and the run ends soon
/// after (not an hour later, when the plugin would wake), its summary printed: for a source (`open`, `next`), a transform (`open`,
/// `process`, `finish`) and a sink (`open`, `write`, `finish`).
#[test]
fn a_plugin_blocked_in_any_call_is_stopped_at_its_deadline() {
    plugins();
    let dir = temp();
    let cases = [
        ("source", "open"),
        ("source", "next"),
        ("transform", "open"),
        ("transform", "process"),
        ("transform", "finish"),
        ("sink", "open"),
        ("sink", "write"),
        ("sink", "finish"),
    ];
    // Compile each fixture once, so the timings below are the runs' own.
    for role in ["source", "transform", "sink"] {
        let spec = spec(dir.path(), role, r#"attack = "none""#, "");
        let output = runner().args(["run", "--quiet"]).arg(&spec).output().unwrap();
        assert!(output.status.success(), "{role}: {}", stderr(&output));
    }
    std::thread::scope(|threads| {
        for (role, call) in cases {
            let dir = dir.path().join(format!("{role}-{call}"));
            std::fs::create_dir_all(&dir).unwrap();
            threads.spawn(move || {
                let config = format!(r#"attack = "sleep", call = "{call}""#);
                let spec = spec(&dir, role, &config, "limits = { call_seconds = 2 }");
                let (output, elapsed) = timed_run(&spec, &[]);
                let line = error_line(&output);
                assert_eq!(output.status.code(), Some(1), "{role} {call}: {}", stderr(&output));
                assert!(
                    line.contains("exceeded its time limit: a call ran longer than 2 s (limits.call_seconds)"),
                    "{role} {call}: {line}"
                );
                // The plugin would sleep an hour: ending within seconds of the 2 s deadline shows
                // the deadline stopped it (the margin is for 8 runs at once on a loaded machine).
                assert!(elapsed < Duration::from_secs(12), "{role} {call}: took {elapsed:?}");
                assert!(stderr(&output).contains("pipeline `"), "{role} {call}: no summary: {}", stderr(&output));
            });
        }
    });
}

/// `call_seconds = 0` still means no deadline: a plugin that sleeps 1.5 s in `open` is waited for.
#[test]
fn without_a_deadline_a_sleeping_plugin_is_waited_for() {
    plugins();
    let dir = temp();
    let spec = spec(
        dir.path(),
        "transform",
        r#"attack = "sleep", value = "1500", call = "open""#,
        "limits = { call_seconds = 0 }",
    );
    let (output, elapsed) = timed_run(&spec, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
}

/// A 64 MiB error message reaches the terminal cut to a few KiB, saying how much was cut, and so
/// does the dead letter that stores it.
#[test]
fn a_huge_error_message_is_cut() {
    plugins();
    let dir = temp();
    let path = spec(dir.path(), "transform", r#"attack = "big-error""#, "");
    let (output, _) = timed_run(&path, &[]);
    assert_eq!(output.status.code(), Some(1));
    let line = error_line(&output);
    assert!(line.contains("plugin `hostile.wasm` failed: xxxx"), "{}", &line[..200.min(line.len())]);
    assert!(line.ends_with(&format!("... ({} bytes cut)", (64 << 20) - 4096)), "{}", &line[line.len() - 80..]);
    assert!(output.stderr.len() < 16 << 10, "{} bytes on stderr", output.stderr.len());

    let rejected = dir.path().join("rejected.jsonl");
    let extra = format!("on_error = \"dead-letter\"\ndead_letter = {{ url = \"{}\" }}", rejected.display());
    let path = spec(dir.path(), "transform", r#"attack = "big-error""#, &extra);
    let (output, _) = timed_run(&path, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let letters = std::fs::read_to_string(&rejected).unwrap();
    assert_eq!(letters.lines().count(), 150);
    assert!(letters.lines().all(|l| l.len() < 6 << 10 && l.contains("bytes cut)")), "{}", &letters[..300]);
}

/// 200,000 log lines of 1 KiB, and as many lines on stdout and on stderr, leave on the runner's
/// stderr no more than the step's budget allows: a burst of 256 KiB and 64 KiB per second of the
/// run; the lines dropped are counted in the summary and the JSON report, and the run succeeds.
#[test]
fn a_flood_of_output_is_rate_limited() {
    plugins();
    let dir = temp();
    for attack in ["log-flood", "stdout-flood", "stderr-flood"] {
        let spec = spec(dir.path(), "transform", &format!(r#"attack = "{attack}""#), "");
        let (output, elapsed) = timed_run(&spec, &["--report", "json"]);
        let err = stderr(&output);
        assert!(output.status.success(), "{attack}: {}", &err[err.len().saturating_sub(2000)..]);
        // The budget's bytes, and a few KiB for the runner's own lines.
        let budget = (256 << 10) + (64 << 10) * (elapsed.as_secs() + 1) as usize + (16 << 10);
        assert!(output.stderr.len() < budget, "{attack}: {} bytes on stderr in {elapsed:?}", output.stderr.len());
        assert!(err.contains("dropping lines until it slows down"), "{attack}");
        let report: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
        let dropped = report["steps"][1]["suppressed_lines"].as_u64().unwrap();
        let shown = 200_000 - dropped;
        assert!(dropped < 200_000 && shown < (budget / 1024) as u64, "{attack}: {dropped} lines dropped");

        let (output, _) = timed_run(&spec, &[]);
        assert!(stderr(&output).contains("lines of plugin output dropped)"), "{attack}: {}", tail(&output));
    }
}

fn tail(output: &Output) -> String {
    let err = stderr(output);
    err[err.len().saturating_sub(1500)..].to_string()
}

/// A plugin that exits is said to have exited, with the status the host can know.
#[test]
fn an_exit_is_reported_with_its_status() {
    plugins();
    let dir = temp();
    for (role, call) in [("transform", "process"), ("source", "open"), ("sink", "finish")] {
        let spec = spec(dir.path(), role, &format!(r#"attack = "exit", value = "3", call = "{call}""#), "");
        let (output, _) = timed_run(&spec, &[]);
        assert_eq!(output.status.code(), Some(1), "{role}");
        let line = error_line(&output);
        // `exit(3)` from Rust goes through WASI 0.2's `exit`, which passes only failure (1).
        assert!(
            line.contains(".wasm` exited with a failure status (1: WASI 0.2 passes any non-zero"),
            "{role}: {line}"
        );
    }
}

/// A plugin that refuses its config is a spec error, for `validate` and `run` alike (exit 2),
/// located at the step's `config` table and quoting the plugin, whose position is in the JSON.
#[test]
fn a_config_the_plugin_refuses_is_a_spec_error() {
    plugins();
    let dir = temp();
    let path = dir.path().join("bad-config.toml");
    let text = format!(
        "[pipeline]\nplugin_dir = \"{}\"\n\n[source]\nkind = \"csv\"\nconfig = {{ url = \"{}\" }}\n\n\
         [[transform]]\nname = \"ratios\"\nplugin = \"derive\"\n\n[transform.config]\ncolumns = 5\n\n\
         [sink]\nkind = \"discard\"\n",
        plugin_dir().display(),
        root().join("models/iris/iris.csv").display()
    );
    std::fs::write(&path, text).unwrap();
    for command in ["validate", "run"] {
        let output = runner().arg(command).arg(&path).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{command}: {}", stderr(&output));
        let line = error_line(&output);
        assert!(
            line.starts_with(&format!(
                "error: {}:12:1: step `ratios`: plugin `derive.wasm` refused to open with its `config` table: ",
                path.display()
            )),
            "{command}: {line}"
        );
        assert!(line.contains("invalid type: integer `5`"), "{command}: {line}");
        assert!(line.contains("that position is in the config as JSON"), "{command}: {line}");
    }
    // A config the plugin accepts passes, and `validate` says so.
    let output = runner().args(["validate", "pipelines/petals.toml"]).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("petals.toml: ok"));
}

/// Runs the petals pipeline with its compiled plugins cached in `cache`.
fn petals(cache: &Path) -> Output {
    runner().env("RUNNER_CACHE_DIR", cache).args(["run", "pipelines/petals.toml"]).output().unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The cache holds native code the runner runs: it creates the directory private and its
/// entries readable by the user only, and refuses a directory or an entry that someone else can
/// write (or owns): the plugin is compiled in memory instead, with a warning that says why, and
/// the run's output is the plugin's own. A read-only cache (as baked into an image) is used.
#[test]
fn a_cache_others_can_write_is_not_trusted() {
    plugins();
    let dir = temp();
    let cache = dir.path().join("cache");
    let output = petals(&cache);
    assert!(output.status.success(), "{}", stderr(&output));
    let expected = stdout(&output);
    assert_eq!(mode(&cache), 0o700);
    let entries: Vec<PathBuf> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(mode(entry), 0o600);

    // Plant another plugin's compiled code where derive's entry is: with the directory open to
    // everyone, the cache is not used at all.
    let hostile = temp();
    let output = runner()
        .env("RUNNER_CACHE_DIR", hostile.path())
        .args(["plugin", "inspect"])
        .arg(common::plugin("hostile"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let planted = std::fs::read_dir(hostile.path()).unwrap().next().unwrap().unwrap().path();
    std::fs::copy(&planted, entry).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = petals(&cache);
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    assert!(
        err.contains(&format!("not using the plugin cache {}: others can write it (mode 777)", cache.display())),
        "{err}"
    );
    assert!(err.contains("(cache untrusted"), "{err}");
    assert_eq!(stdout(&output), expected, "the planted code must not run");

    // The directory is private again, but the entry is writable by others.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    let output = petals(&cache);
    let err = stderr(&output);
    assert!(
        err.contains(&format!("not loading the cache entry {}: others can write it (mode 666)", entry.display())),
        "{err}"
    );
    assert_eq!(stdout(&output), expected);

    // An entry owned by another user: only root can make one, so as another user this case is
    // skipped (listed, and a failure under CI=true, which runs as root).
    std::fs::set_permissions(entry, std::fs::Permissions::from_mode(0o600)).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(entry, Some(65534), None).unwrap();
        let output = petals(&cache);
        let err = stderr(&output);
        assert!(err.contains("it is owned by user id 65534, not by this user (0) or root"), "{err}");
        assert_eq!(stdout(&output), expected);
        std::os::unix::fs::chown(entry, Some(0), None).unwrap();
    } else {
        common::skip("root (to give a cache entry to another user)", "run the tests as root, as CI does");
    }

    // A read-only cache, its entry the right one: used as it is.
    std::fs::remove_file(entry).unwrap();
    assert!(petals(&cache).status.success());
    let entry = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o555)).unwrap();
    let output = petals(&cache);
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = stderr(&output);
    assert!(err.contains("(cache hit"), "{err}");
    assert_eq!(stdout(&output), expected);
    assert_eq!(std::fs::metadata(&entry).unwrap().uid(), unsafe { libc::geteuid() });
}
