//! `cargo xtask <task>`: the project's entry points, so a newcomer needs two commands.
//!
//! - `cargo xtask run [SPEC] [-- ARGS]`: build the plugins and the host, put `runner` on the
//!   PATH (`install`), then run a pipeline (default: `pipelines/iris-local.toml`, which needs no
//!   servers).
//! - `cargo xtask test`: build the plugins, run every test of the host and the plugins, and
//!   check formatting and lints. `.ci/run` calls exactly this.
//! - `cargo xtask build`: build the plugins and the host only.
//! - `cargo xtask plugins`: build the plugins only.
//! - `cargo xtask install [--root DIR]`: put the built `runner` on the PATH (`cargo install`,
//!   reusing the build: into `~/.cargo/bin`, or `DIR/bin`).
//!
//! Plugins live in their own workspace (`plugins/`) because they build for `wasm32-wasip2`;
//! this tool is the one place that knows how to build both sides.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const DEFAULT_SPEC: &str = "pipelines/iris-local.toml";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("test") => test(),
        Some("build") => build_plugins().and_then(|()| build_host()),
        Some("plugins") => build_plugins(),
        Some("install") => install(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 run [SPEC] [-- ARGS]  build everything, then `runner run SPEC` (default {DEFAULT_SPEC})\n  \
                 test                  build the plugins, run all tests, check formatting and lints\n  \
                 build                 build the plugins and the host\n  \
                 plugins               build the plugins (wasm32-wasip2 components)\n  \
                 install [--root DIR]  put the built `runner` on the PATH (~/.cargo/bin, or DIR/bin)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's directory.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

fn step(what: &str, command: &mut Command) -> Result<(), String> {
    eprintln!("xtask: {what}");
    let status = command.status().map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{what}: failed ({status})")) }
}

fn build_plugins() -> Result<(), String> {
    step(
        "building plugins (wasm32-wasip2)",
        cargo().current_dir(root().join("plugins")).args(["build", "--release", "--target", "wasm32-wasip2"]),
    )
}

fn build_host() -> Result<(), String> {
    step("building the runner", cargo().args(["build", "--package", "runner"]))
}

/// The host's target directory: `$CARGO_TARGET_DIR` (relative to the root), else `target`.
fn target_dir() -> PathBuf {
    root().join(std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from))
}

/// `cargo install` of the runner, reusing the workspace's build (the dev profile, whose
/// dependencies are optimised): `runner` is then on the PATH, in `~/.cargo/bin` (or `DIR/bin`
/// for `--root DIR`). For a release build, `cargo install --locked --path runner`.
fn install(args: &[String]) -> Result<(), String> {
    let mut command = cargo();
    command.args(["install", "--locked", "--debug", "--force", "--path", "runner", "--target-dir"]).arg(target_dir());
    match args {
        [] => {}
        [flag, dir] if flag == "--root" => {
            command.arg("--root").arg(dir);
        }
        _ => return Err("usage: cargo xtask install [--root DIR]".into()),
    }
    step("installing runner (cargo install)", &mut command)
}

fn run(args: &[String]) -> Result<(), String> {
    let (spec, rest) = match args.first() {
        Some(first) if first != "--" => (first.as_str(), &args[1..]),
        _ => (DEFAULT_SPEC, args),
    };
    let rest: Vec<&String> = rest.iter().skip_while(|a| *a == "--").collect();
    build_plugins()?;
    build_host()?;
    // From here on `runner` is a command of its own, as the docs write it.
    install(&[])?;
    step(
        &format!("runner run {spec}"),
        cargo().args(["run", "--quiet", "--package", "runner", "--", "run", spec]).args(rest),
    )
}

fn test() -> Result<(), String> {
    // Cheap checks first, so a formatting or lint slip fails CI in minutes, not after the tests.
    step("checking formatting", cargo().args(["fmt", "--all", "--check"]))?;
    step(
        "checking formatting (plugins)",
        cargo().current_dir(root().join("plugins")).args(["fmt", "--all", "--check"]),
    )?;
    step("linting", cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    step(
        "linting plugins",
        cargo().current_dir(root().join("plugins")).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--target",
            "wasm32-wasip2",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    build_plugins()?;
    // Native unit tests of the plugin crates. onnx-predictor is tested through the host instead
    // (runner/tests/predictor.rs, inside WebAssembly): natively it would compile tract a second
    // time, for the host target, which costs CI more than ten minutes.
    step(
        "testing plugins",
        cargo().current_dir(root().join("plugins")).args(["test", "--workspace", "--exclude", "onnx-predictor"]),
    )?;
    // The forest's unit tests again inside WebAssembly, where its hot loops take their SIMD128
    // path, run by the runner's engine settings (runner/examples/wasi_command.rs).
    step("building the WASI test runner", cargo().args(["build", "--package", "runner", "--example", "wasi_command"]))?;
    // (A relative CARGO_TARGET_DIR is relative to the root, where the runner was built.)
    let target = target_dir();
    step(
        "testing forest inside WebAssembly",
        cargo()
            .current_dir(root().join("plugins"))
            .env("CARGO_TARGET_WASM32_WASIP2_RUNNER", target.join("debug/examples/wasi_command"))
            .env("RUNNER_CACHE_DIR", target.join("tmp/plugin-cache"))
            .args(["test", "--package", "forest", "--target", "wasm32-wasip2"]),
    )?;
    // Every test binary runs even when one fails, so one CI log shows every failure.
    step("testing the runner", cargo().args(["test", "--workspace", "--no-fail-fast"]))
}
