//! Writing plugins: the guide's walk-through (docs/plugins.md) builds and runs as written, the
//! templates of `runner plugin new` build and run, `runner plugin inspect` tells each example's
//! world, plugins of the wrong contract version are refused, the examples of each kind work
//! together, and a plugin written in Python runs in the same host.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{plugin, plugin_dir, plugins, root, run, runner, stderr, stdout, temp};

/// A target directory shared by every crate these tests build, so wit-bindgen and serde are
/// compiled once.
fn shared_target() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("new-plugins-target")
}

/// Builds a stamped-out plugin crate for wasm32-wasip2 into the shared target.
fn build(dir: &Path) {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(dir)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", shared_target())
        .status()
        .expect("run cargo");
    assert!(status.success(), "building {} failed", dir.display());
}

/// Runs a crate's `pipeline.toml` with its plugin found in the shared target.
fn run_pipeline(dir: &Path) -> std::process::Output {
    let plugins = shared_target().join("wasm32-wasip2/release");
    runner()
        .current_dir(dir)
        .args(["run", "--quiet", "--plugin-dir", plugins.to_str().unwrap(), "pipeline.toml"])
        .output()
        .unwrap()
}

fn new_plugin(parent: &Path, name: &str, kind: &str) -> PathBuf {
    let output =
        runner().args(["plugin", "new", name, "--kind", kind, "--dir", parent.to_str().unwrap()]).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains(&format!("created {}", parent.join(name).display())), "{}", stdout(&output));
    parent.join(name)
}

/// The code blocks of docs/plugins.md: `(info string, text)`.
fn guide_blocks() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("docs/plugins.md")).unwrap();
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```").filter(|i| !i.is_empty()) {
            let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
            blocks.push((info.to_string(), body.join("\n") + "\n"));
        }
    }
    blocks
}

/// The walk-through, exactly as the guide writes it: `runner plugin new shout`, its `src/lib.rs`
/// and `pipeline.toml`, built and run, printing the guide's output.
#[test]
fn the_guides_walk_through_builds_and_runs() {
    let blocks = guide_blocks();
    let commands: String = blocks.iter().filter(|(info, _)| info == "sh").map(|(_, body)| body.as_str()).collect();
    for command in [
        "runner plugin new shout --kind transform",
        "cargo build --release --target wasm32-wasip2",
        "runner run --quiet pipeline.toml",
    ] {
        assert!(commands.contains(command), "the guide no longer says `{command}`");
    }
    let dir = temp();
    let crate_dir = new_plugin(dir.path(), "shout", "transform");
    // The guide's Cargo.toml is the one the template writes.
    let manifest =
        &blocks.iter().find(|(info, _)| info == "toml file=Cargo.toml").expect("the guide shows Cargo.toml").1;
    assert_eq!(&std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap(), manifest);
    for (info, body) in &blocks {
        if let Some(file) = info.split_whitespace().find_map(|w| w.strip_prefix("file=")) {
            std::fs::write(crate_dir.join(file), body).unwrap();
        }
    }
    build(&crate_dir);
    let output = run_pipeline(&crate_dir);
    assert!(output.status.success(), "{}", stderr(&output));
    let expected = &blocks.iter().find(|(info, _)| info == "text output").expect("the guide shows the output").1;
    assert_eq!(&stdout(&output), expected);
}

/// `runner plugin new` for each kind: the crate builds with one command and its pipeline runs.
#[test]
fn new_plugins_of_every_kind_build_and_run() {
    let dir = temp();
    for (kind, expected) in
        [("transform", "name,value\nb,2.5\nc,3.5\ne,4.0\n"), ("source", "n\n1\n2\n3\n4\n5\n"), ("sink", "")]
    {
        let name = format!("my-{kind}");
        let crate_dir = new_plugin(dir.path(), &name, kind);
        build(&crate_dir);
        let output = run_pipeline(&crate_dir);
        assert!(output.status.success(), "{kind}: {}", stderr(&output));
        assert_eq!(stdout(&output), expected, "{kind}");
        if kind == "sink" {
            assert!(stderr(&output).contains("my-sink: received 5 rows in all"), "{}", stderr(&output));
        }
    }
    // Refused: a name that is not a crate name, and a directory that exists.
    let output = runner()
        .args(["plugin", "new", "Bad Name", "--kind", "sink", "--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let output = runner()
        .args(["plugin", "new", "my-sink", "--kind", "sink", "--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("already exists"), "{}", stderr(&output));
}

/// `runner plugin inspect` names the world of every example and the contract version.
#[test]
fn inspect_tells_the_world_of_each_example() {
    for (name, world, export) in [
        ("generate", "source-plugin", "etl:plugin/source@0.2.1"),
        ("derive", "transform-plugin", "etl:plugin/transform@0.2.1"),
        ("onnx-predictor", "transform-plugin", "etl:plugin/transform@0.2.1"),
        ("dir-sink", "sink-plugin", "etl:plugin/sink@0.2.1"),
    ] {
        let output = run(&["plugin", "inspect", plugin(name).to_str().unwrap()]);
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        let out = stdout(&output);
        assert!(out.contains(&format!("world:    {world} (exports {export})")), "{name}: {out}");
        assert!(
            out.contains("contract: etl:plugin@0.2.1; this runner speaks etl:plugin@0.2.1 and 0.1.0: compatible"),
            "{out}"
        );
        assert!(out.contains("imports:  ") && out.contains("exports:  "), "{out}");
    }
}

/// A plugin built against a contract version the runner does not speak is refused, naming the
/// versions; one built against a frozen copy of the older 0.1.0 still runs, and gets the
/// current plugins' dictionary-encoded text spelled out, since 0.1.0 has no such case.
#[test]
fn contract_versions_are_checked() {
    let output = run(&["plugin", "inspect", plugin("contract-v0-3-0").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let message = "built against contract etl:plugin@0.3.0, but this runner speaks etl:plugin@0.2.1 and 0.1.0";
    assert!(stdout(&output).contains(message), "{}", stdout(&output));
    let output = run(&["plugin", "inspect", plugin("contract-v0-1-0").to_str().unwrap()]);
    assert!(output.status.success(), "{}", stdout(&output));
    let compatible = "contract: etl:plugin@0.1.0; this runner speaks etl:plugin@0.2.1 and 0.1.0: compatible";
    assert!(stdout(&output).contains(compatible), "{}", stdout(&output));

    // Score the Iris rows (the predictor returns its labels as a dictionary), then pass them
    // through a 0.1.0 plugin, or a 0.2.0 one that fails on a dictionary, or through none: the
    // plugins get the labels spelled out, and the CSV written is the same.
    let dir = temp();
    let score = format!(
        "[[transform]]\nplugin = \"{}\"\nassets = {{ model = \"{}\" }}\nconfig = {{ features = [\"sepal_length\", \
         \"sepal_width\", \"petal_length\", \"petal_width\"], classes = [\"setosa\", \"versicolor\", \"virginica\"] }}\n",
        plugin("onnx-predictor").display(),
        root().join("models/iris/model.onnx").display()
    );
    let run_with = |fixture: &str, config: &str| {
        let (spec, out) = (dir.path().join("spec.toml"), dir.path().join(format!("{fixture}.csv")));
        let pass = match fixture {
            "none" => String::new(),
            _ => format!("[[transform]]\nplugin = \"{}\"\nconfig = {{ {config} }}\n", plugin(fixture).display()),
        };
        let text = format!(
            "[source]\nkind = \"csv\"\nconfig = {{ url = \"{}\" }}\n\n{score}{pass}\n[sink]\nkind = \"csv\"\nconfig = {{ url = \"{}\" }}\n",
            root().join("models/iris/iris.csv").display(),
            out.display()
        );
        std::fs::write(&spec, text).unwrap();
        let output = run(&["run", spec.to_str().unwrap()]);
        (output, std::fs::read_to_string(out).unwrap_or_default())
    };
    let (output, _) = run_with("contract-v0-3-0", "");
    assert_eq!(output.status.code(), Some(2), "refused before the run");
    assert!(stderr(&output).contains(message), "{}", stderr(&output));

    let (output, direct) = run_with("none", "");
    assert!(output.status.success(), "{}", stderr(&output));
    let labels: Vec<&str> = direct.lines().skip(1).map(|line| line.rsplit(',').next().unwrap()).collect();
    assert_eq!(labels.len(), 150);
    for class in ["setosa", "versicolor", "virginica"] {
        assert!(labels.iter().filter(|&&l| l == class).count() >= 45, "{class}: {direct}");
    }
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines.sort();
        lines
    };
    for (fixture, config) in [("contract-v0-1-0", ""), ("hostile", "attack = \"plain-text\"")] {
        let (output, passed) = run_with(fixture, config);
        assert!(output.status.success(), "{fixture}: {}", stderr(&output));
        assert!(stderr(&output).contains("150 rows read, 150 rows written"), "{}", stderr(&output));
        assert_eq!(sorted(&passed), sorted(&direct), "{fixture}: rows may come in another order, but not other rows");
    }
}

/// A source and a sink built against contract 0.1.0 still run, through a 0.2.0 transform:
/// the 0.1.0 bindings of each kind of step, nulls included.
#[test]
fn sources_and_sinks_of_contract_0_1_0_still_run() {
    let dir = temp();
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "[source]\nplugin = \"{}\"\n\n[[transform]]\nplugin = \"{}\"\nconfig = {{ attack = \"plain-text\" }}\n\n\
             [sink]\nplugin = \"{}\"\n",
            plugin("contract-v0-1-0-source").display(),
            plugin("hostile").display(),
            plugin("contract-v0-1-0-sink").display()
        ),
    )
    .unwrap();
    let output = run(&["run", spec.to_str().unwrap()]);
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    assert!(err.contains("received 3 rows: n=1,2,3 word=alpha,null,gamma"), "{err}");
    assert!(err.contains("finish was called"), "{err}");
    assert!(err.contains("3 rows read, 3 rows written"), "{err}");
}

/// The examples of each kind together: `generate` rows, `derive` a column, `dir-sink` writes a
/// CSV into the directory the spec grants it; without the grant it cannot.
#[test]
fn source_transform_and_sink_examples_work_together() {
    plugins();
    let dir = temp();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let spec = |grant: &str| {
        format!(
            "[pipeline]\nbatch_rows = 64\nplugin_dir = \"{}\"\n\n[source]\nplugin = \"generate\"\nconfig = {{ rows = 1000, seed = 7 }}\n\n\
             [[transform]]\nplugin = \"derive\"\nconfig = {{ columns = [{{ name = \"petal_area\", expr = \"petal_length * petal_width\" }}] }}\n\n\
             [sink]\nplugin = \"dir-sink\"\n{grant}config = {{ dir = \"/out\", file = \"rows.csv\" }}\n",
            plugin_dir().display()
        )
    };
    let path = dir.path().join("spec.toml");
    std::fs::write(
        &path,
        spec(&format!("grants = {{ dirs = [{{ host = \"{}\", guest = \"/out\", write = true }}] }}\n", out.display())),
    )
    .unwrap();
    let output = run(&["run", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(out.join("rows.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1001);
    assert_eq!(lines[0], "sepal_length,sepal_width,petal_length,petal_width,id,petal_area");
    // Deterministic: the same seed gives the same rows, and the derived column is right.
    let ids: Vec<i64> = lines[1..].iter().map(|l| l.split(',').nth(4).unwrap().parse().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, (0..1000).collect::<Vec<i64>>());
    for line in &lines[1..] {
        let f: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
        assert!((f[5] - f[2] * f[3]).abs() < 1e-9, "{line}");
    }
    let again = dir.path().join("again");
    std::fs::create_dir(&again).unwrap();
    std::fs::write(
        &path,
        spec(&format!(
            "grants = {{ dirs = [{{ host = \"{}\", guest = \"/out\", write = true }}] }}\n",
            again.display()
        )),
    )
    .unwrap();
    assert!(run(&["run", path.to_str().unwrap()]).status.success());
    let mut first: Vec<String> = text.lines().map(String::from).collect();
    let mut second: Vec<String> =
        std::fs::read_to_string(again.join("rows.csv")).unwrap().lines().map(String::from).collect();
    first.sort();
    second.sort();
    assert_eq!(first, second, "the same seed gives the same rows");

    // No grant: the sink sees no directory, and says so.
    std::fs::write(&path, spec("")).unwrap();
    // A plugin that refuses to open for want of a grant: a spec error, exit status 2.
    let output = run(&["run", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(
            "plugin `dir_sink.wasm` refused to open with its `config` table: cannot create /out/rows.csv.partial"
        ),
        "{}",
        stderr(&output)
    );
}

/// The Python transform (plugins/python/scale), built with componentize-py, produces the
/// expected rows in the same host.
#[test]
fn a_python_plugin_runs() {
    let Some(wasm) = python_plugin() else { return };
    let dir = temp();
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "[source]\nkind = \"csv\"\nconfig = {{ url = \"{}\" }}\n\n[[transform]]\nplugin = \"{}\"\n\
             config = {{ columns = [\"sepal_length\", \"petal_width\"], factor = 10 }}\n\n[sink]\nkind = \"csv\"\nconfig = {{ url = \"-\" }}\n",
            root().join("models/iris/iris.csv").display(),
            wasm.display()
        ),
    )
    .unwrap();
    let output = run(&["run", spec.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("scaling sepal_length, petal_width by 10.0 step=scale"), "{}", stderr(&output));
    let out = stdout(&output);
    let iris = std::fs::read_to_string(root().join("models/iris/iris.csv")).unwrap();
    for (got, source) in out.lines().skip(1).zip(iris.lines().skip(1)) {
        let got: Vec<f64> = got.split(',').map(|v| v.parse().unwrap()).collect();
        let source: Vec<f64> = source.split(',').map(|v| v.parse().unwrap()).collect();
        assert_eq!(got[0], source[0] * 10.0);
        assert_eq!(got[1], source[1]);
        assert_eq!(got[3], source[3] * 10.0);
    }
    assert_eq!(out.lines().count(), 151);
    // Bad config: the Python `Err` arrives as the plugin's message, a spec error (exit 2).
    std::fs::write(&spec, std::fs::read_to_string(&spec).unwrap().replace("factor = 10", "factor = \"x\"")).unwrap();
    let output = run(&["run", spec.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("plugin `scale.wasm` refused to open with its `config` table: invalid config"),
        "{}",
        stderr(&output)
    );
}

/// Builds plugins/python/scale with componentize-py, once; `None` when it is not installed (the
/// calling test is then skipped: a failure under CI=true).
fn python_plugin() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    let built = BUILT
        .get_or_init(|| {
            let source = root().join("plugins/python/scale");
            let wasm = source.join("scale.wasm");
            let built = Command::new(common::python_tool("componentize-py"))
                .current_dir(&source)
                .args(["-d", "../../../wit", "-w", "transform-plugin", "componentize", "app", "-o", "scale.wasm"])
                .output();
            match built {
                Ok(output) if output.status.success() => Some(wasm),
                Ok(output) => panic!("componentize-py failed: {}", String::from_utf8_lossy(&output.stderr)),
                Err(_) => None,
            }
        })
        .clone();
    if built.is_none() {
        common::skip("componentize-py", common::PIP_INSTALL);
    }
    built
}

/// `cargo xtask install` puts `runner` on the PATH (`cargo install`, reusing the build), and
/// then the README's commands run exactly as written: every `runner ...` line of its `sh`
/// blocks that needs no servers (those are tested against real ones in tests/flow.rs).
#[test]
fn the_readmes_commands_run_as_written_once_runner_is_installed() {
    let root_dir = temp();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root())
        .args(["xtask", "install", "--root"])
        .arg(root_dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "cargo xtask install failed");
    let bin = root_dir.path().join("bin");
    assert!(bin.join("runner").is_file());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());

    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            command if in_sh && command.starts_with("runner ") => {
                let command = command.split(" #").next().unwrap().trim().to_string();
                let needs_servers = command.contains("iris.toml") || command.contains("iris-onnx.toml");
                if !needs_servers && !command.starts_with("runner plugin") {
                    commands.push(command);
                }
            }
            _ => {}
        }
    }
    assert!(commands.len() >= 3, "the README shows few runner commands: {commands:?}");
    common::plugins();
    for command in commands {
        let output = Command::new("sh")
            .args(["-c", &command])
            .current_dir(root())
            .env("PATH", &path)
            .env("RUNNER_CACHE_DIR", common::cache_dir())
            .output()
            .unwrap();
        assert!(output.status.success(), "`{command}` failed: {}", stderr(&output));
    }
}

/// The README's first command, `cargo xtask run`: it builds what it needs, starts a local S3
/// server and a redis-server, runs the flagship job, prints two lookups (a setosa and a
/// virginica), and stops the servers.
#[test]
fn cargo_xtask_run_runs_the_flagship_job_and_looks_rows_up() {
    if common::services::RedisServer::start().is_none() {
        return;
    }
    let install = temp();
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root())
        .args(["xtask", "run"])
        .env("CARGO_INSTALL_ROOT", install.path())
        .env("RUNNER_CACHE_DIR", common::cache_dir())
        .output()
        .unwrap();
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(output.status.success(), "{err}");
    assert!(err.contains("xtask: runner run pipelines/iris.toml"), "{err}");
    assert!(err.contains("pipeline `iris` finished in") && err.contains("150 rows read, 150 rows written"), "{err}");
    assert!(err.contains("xtask: runner lookup pipelines/iris.toml 5.1 3.5 1.4 0.2"), "{err}");
    assert_eq!(out.lines().filter(|l| !l.starts_with("key: ")).collect::<Vec<_>>(), ["setosa", "virginica"], "{out}");
    assert!(install.path().join("bin/runner").is_file(), "runner is installed");
}
