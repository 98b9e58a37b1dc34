//! The command line as a shell uses it: output into a pipe whose reader stops early, and
//! `${...}` in every string of a spec.

mod common;

use std::process::Stdio;

use common::{plugin, plugins, run, runner, stderr, stdout, temp};

/// `runner plan ... | head -1`: the reader closes the pipe before the command has printed
/// (here before it prints anything at all); every command that prints ends quietly, status 0,
/// without a panic, as Unix tools do.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    plugins();
    let inspect = plugin("derive");
    let inspect = inspect.to_str().unwrap();
    let cases: [&[&str]; 5] = [
        &["plan", "--shards", "4", "pipelines/iris-local.toml"],
        &["validate", "pipelines/petals.toml"],
        &["plugin", "inspect", inspect],
        &["--help"],
        &["run", "--help"],
    ];
    for args in cases {
        let mut child = runner().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take()); // the reader is gone
        let output = child.wait_with_output().unwrap();
        let err = stderr(&output);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {err}");
    }
}

/// `${NAME}` works in every string of a spec, `[pipeline]` included: `plugin_dir`, a step's
/// `plugin`, `name` and `kind` read from the environment as `config` does.
#[test]
fn every_string_of_a_spec_is_interpolated() {
    let plugins = plugins();
    let dir = temp();
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "[pipeline]\nname = \"${{RUN_NAME:-from-default}}\"\nplugin_dir = \"${{PLUGINS}}\"\n\n\
             [source]\nkind = \"${{SOURCE_KIND}}\"\nconfig = {{ url = \"{}\" }}\n\n\
             [[transform]]\nname = \"${{STEP}}\"\nplugin = \"${{PLUGIN}}\"\n\
             config = {{ columns = [{{ name = \"twice\", expr = \"2 * petal_width\" }}] }}\n\n\
             [sink]\nkind = \"csv\"\nconfig = {{ url = \"-\" }}\n",
            common::root().join("models/iris/iris.csv").display()
        ),
    )
    .unwrap();
    let output = runner()
        .args(["run", spec.to_str().unwrap()])
        .env("PLUGINS", &plugins)
        .env("SOURCE_KIND", "csv")
        .env("STEP", "doubled")
        .env("PLUGIN", "derive")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("pipeline `from-default` finished"), "{err}");
    assert!(err.lines().any(|l| l.trim_start().starts_with("doubled ")), "{err}");
    assert!(stdout(&output).lines().next().unwrap().ends_with(",twice"));
    // Unset, it is an error located at the value.
    let output = run(&["validate", spec.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(&format!(
            "error: {}:3:14: `pipeline.plugin_dir`: environment variable `PLUGINS` is not set",
            spec.display()
        )),
        "{}",
        stderr(&output)
    );
}
