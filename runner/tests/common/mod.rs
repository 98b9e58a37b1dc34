//! Shared by the integration tests: the `runner` binary, the plugins built from source, and one
//! compiled-plugin cache for every test process, so Cranelift runs once per plugin per build.

#![allow(dead_code)] // each test binary uses its own subset

pub mod s3_fs;
pub mod services;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Where the plugin workspace puts its components.
pub fn plugin_dir() -> PathBuf {
    root().join("plugins/target/wasm32-wasip2/release")
}

/// Builds the plugins once per test process (a no-op when `cargo xtask test` already did).
pub fn plugins() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root().join("plugins"))
            .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
            .status()
            .expect("run cargo to build the plugins");
        assert!(status.success(), "building the plugins failed");
    });
    plugin_dir()
}

/// The path of a built plugin by crate name (`bad-batch` -> `bad_batch.wasm`).
pub fn plugin(name: &str) -> PathBuf {
    plugins().join(format!("{}.wasm", name.replace('-', "_")))
}

/// The compiled-component cache shared by all tests.
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

/// `runner` with the shared cache, and no inherited logging settings.
pub fn runner() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runner"));
    command.env("RUNNER_CACHE_DIR", cache_dir()).env_remove("RUST_LOG").current_dir(root());
    command
}

/// Runs `runner` with `args` and returns its output.
pub fn run(args: &[&str]) -> Output {
    runner().args(args).output().expect("start runner")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A temporary directory for a test's specs and outputs.
pub fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// Python's `str()` of a float, as the runner writes it.
pub fn python_float(x: f64) -> String {
    let mut text = String::new();
    runner::format::write_python_float(&mut text, x);
    text
}
