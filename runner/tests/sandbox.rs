//! Hostile plugins are contained: each attack in `plugins/fixtures/hostile` fails its step with a
//! clear message (naming the limit it hit), nothing leaks, and the runner exits normally.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{plugin_dir, plugins, root, run, stderr, temp};

/// A spec that feeds the Iris rows to the hostile plugin with `config` and `extra` step keys.
fn spec(dir: &Path, config: &str, extra: &str, batch_rows: usize) -> PathBuf {
    let text = format!(
        "[pipeline]\nbatch_rows = {batch_rows}\nplugin_dir = \"{plugins}\"\n\n\
         [source]\nkind = \"csv\"\nconfig = {{ url = \"{data}\" }}\n\n\
         [[transform]]\nname = \"attack\"\nplugin = \"hostile\"\nworkers = 1\nconfig = {{ {config} }}\n{extra}\n\n\
         [sink]\nkind = \"discard\"\n",
        plugins = plugin_dir().display(),
        data = root().join("models/iris/iris.csv").display(),
    );
    let path = dir.join("spec.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs an attack; it must fail the run (exit 1, not a crash) with `message` in its error line.
fn contained(config: &str, extra: &str, message: &str) -> String {
    plugins();
    let dir = temp();
    let output = run(&["run", spec(dir.path(), config, extra, 4096).to_str().unwrap()]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "the runner must fail cleanly: {err}");
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.starts_with("error: step `attack`: plugin `hostile.wasm` "), "{line}");
    assert!(line.contains(message), "expected `{message}` in: {line}");
    err
}

#[test]
fn reading_a_file_outside_any_grant_fails() {
    let err = contained(r#"attack = "read-file", path = "/etc/passwd""#, "", "cannot read /etc/passwd");
    assert!(!err.contains("root:"), "{err}");
}

#[test]
fn reading_an_environment_variable_not_granted_fails() {
    // SAFETY: set before any thread of this test binary reads the environment for it.
    unsafe { std::env::set_var("RUNNER_TEST_SECRET_TOKEN", "s3cr3t") };
    let err =
        contained(r#"attack = "env", name = "RUNNER_TEST_SECRET_TOKEN""#, "", "cannot read RUNNER_TEST_SECRET_TOKEN");
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[test]
fn opening_a_socket_fails_and_nothing_connects() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    contained(&format!(r#"attack = "socket", address = "{address}""#), "", &format!("cannot connect to {address}"));
    assert!(listener.accept().is_err(), "the plugin reached the listener");
}

#[test]
fn an_endless_loop_is_stopped_at_the_deadline() {
    let started = Instant::now();
    contained(
        r#"attack = "loop""#,
        "limits = { call_seconds = 1 }",
        "exceeded its time limit: a call ran longer than 1 s (limits.call_seconds)",
    );
    assert!(started.elapsed() < Duration::from_secs(20), "stopped too late: {:?}", started.elapsed());
}

/// `call_seconds = 0` is no deadline: a call that computes past what a deadline would allow
/// finishes, whether another step keeps the engine checking deadlines or none does (then the
/// compiled code has no checks at all).
#[test]
fn call_seconds_0_is_no_deadline() {
    plugins();
    let spin = r#"attack = "spin", value = "2500""#;
    // The same call with a deadline of 1 s is stopped: the spin is computing, not sleeping.
    contained(spin, "limits = { call_seconds = 1 }", "exceeded its time limit: a call ran longer than 1 s");

    let guarded = "limits = { call_seconds = 0 }\n\n[[transform]]\nname = \"guard\"\nplugin = \"hostile\"\n\
                   config = { attack = \"none\" }\nlimits = { call_seconds = 1 }";
    for extra in ["limits = { call_seconds = 0 }", guarded] {
        let dir = temp();
        let spec = spec(dir.path(), spin, extra, 4096);
        let output = run(&["run", spec.to_str().unwrap()]);
        let err = stderr(&output);
        assert!(output.status.success(), "{extra}: {err}");
        assert!(err.contains("150 rows read, 150 rows written"), "{extra}: {err}");

        let output = run(&["validate", spec.to_str().unwrap()]);
        let out = common::stdout(&output);
        assert!(out.contains("limits 1024 MiB, no deadline; grants nothing"), "{out}");
        assert_eq!(out.contains("limits 1024 MiB, 1 s/call; grants nothing"), extra == guarded, "{out}");
        let compiled = if extra == guarded { "deadline checks" } else { "no deadline checks" };
        assert!(out.contains(&format!("plugins compiled with {compiled}, no fuel")), "{out}");
    }
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    contained(
        r#"attack = "loop""#,
        "limits = { fuel = 5_000_000 }",
        "used up its fuel: 5000000 units in one call (limits.fuel)",
    );
}

#[test]
fn allocating_past_the_cap_is_stopped() {
    contained(
        r#"attack = "alloc""#,
        "limits = { memory_mb = 64 }",
        "exceeded its memory limit of 64 MiB (limits.memory_mb)",
    );
}

#[test]
fn a_panic_is_a_step_error_with_the_panic_message() {
    contained(r#"attack = "panic""#, "", "crashed (a panic, or `unreachable`); its last words on stderr: ");
    let err = contained(r#"attack = "panic""#, "", "the hostile plugin panics on purpose");
    assert!(err.contains("step=attack"), "stderr lines are logged with the step: {err}");
}

#[test]
fn a_column_that_changes_type_between_batches_is_refused() {
    plugins();
    let dir = temp();
    let output = run(&["run", spec(dir.path(), r#"attack = "wrong-type""#, "", 50).to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("error: step `attack`: its output changed shape between batches: column `sepal_length` changed from f64 to bool"),
        "{err}"
    );
}

/// A granted directory is readable (as read-only), and nothing outside it is.
#[test]
fn a_granted_directory_is_readable_and_nothing_else() {
    let data = temp();
    std::fs::write(data.path().join("lookup.txt"), "granted content\n").unwrap();
    let grant = format!("grants = {{ dirs = [{{ host = \"{}\", guest = \"/lookup\" }}] }}", data.path().display());
    contained(r#"attack = "list-dir", path = "/lookup""#, &grant, "listed /lookup: lookup.txt");
    contained(
        r#"attack = "read-file", path = "/lookup/lookup.txt""#,
        &grant,
        "read /lookup/lookup.txt: granted content",
    );
    contained(r#"attack = "read-file", path = "/lookup/../etc/passwd""#, &grant, "cannot read /lookup/../etc/passwd");
    contained(r#"attack = "read-file", path = "/etc/passwd""#, &grant, "cannot read /etc/passwd");
    // `runner validate` says what is granted.
    let dir = temp();
    let output = run(&["validate", spec(dir.path(), r#"attack = "none""#, &grant, 4096).to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = common::stdout(&output);
    assert!(out.contains(&format!("grants dir {} as /lookup (read-only)", data.path().display())), "{out}");
}

/// What a plugin prints or logs reaches the runner's log, tagged with the step.
#[test]
fn plugin_output_and_logs_reach_the_runners_log() {
    plugins();
    let dir = temp();
    for (attack, expected) in [
        ("print", vec!["hello from the plugin's stdout", "hello from the plugin's stderr"]),
        (
            "log",
            vec![
                "a Level::Info line from the plugin",
                "a Level::Warn line from the plugin",
                "a Level::Error line from the plugin",
            ],
        ),
    ] {
        let output =
            run(&["run", "--quiet", spec(dir.path(), &format!(r#"attack = "{attack}""#), "", 4096).to_str().unwrap()]);
        assert!(output.status.success(), "{}", stderr(&output));
        let err = stderr(&output);
        for line in expected {
            assert!(err.lines().any(|l| l.contains(line) && l.contains("step=attack")), "`{line}` not logged: {err}");
        }
    }
}
