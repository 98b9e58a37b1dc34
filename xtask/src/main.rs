//! `cargo xtask <task>`: the project's entry points, so a newcomer needs two commands.
//!
//! - `cargo xtask run [SPEC] [-- ARGS]`: build the plugins and the host, compile the plugins
//!   into the runner's cache, put `runner` on the PATH (`install`), then run the flagship job
//!   for real: `pipelines/iris.toml` against a local S3-protocol server and a `redis-server`
//!   started on free ports (and stopped after), ending with two `runner lookup`s. Without
//!   `redis-server`, it says how to install it and runs `pipelines/iris-local.toml`. With SPEC,
//!   `runner run SPEC ARGS` instead.
//! - `cargo xtask test`: build the plugins, run every test of the host and the plugins, and
//!   check formatting and lints. `.ci/run` calls exactly this.
//! - `cargo xtask build`: build the plugins and the host only.
//! - `cargo xtask plugins`: build the plugins only.
//! - `cargo xtask install [--root DIR]`: put the built `runner` on the PATH (`cargo install`,
//!   reusing the build: into `~/.cargo/bin`, or `DIR/bin`).
//! - `cargo xtask dist DIR [--debug]`: what the container image holds (the Dockerfile runs it):
//!   `bin/runner` (a release build, or the dev build with `--debug`), the plugins, the plugins
//!   compiled into `cache/`, the pipelines and the Iris models, all readable by anyone and
//!   writable by no one else.
//!
//! Plugins live in their own workspace (`plugins/`) because they build for `wasm32-wasip2`;
//! this tool is the one place that knows how to build both sides.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The flagship job, and its stand-in on local files when `redis-server` is missing.
const FLAGSHIP: &str = "pipelines/iris.toml";
const LOCAL_SPEC: &str = "pipelines/iris-local.toml";
/// Pipelines that need no servers: the build compiles their plugins into the runner's cache.
const LOCAL_SPECS: [&str; 3] = ["pipelines/iris-local.toml", "pipelines/petals.toml", "pipelines/iris-logreg.toml"];
/// The credentials of the local S3 server (docker-compose.yml's MinIO has the same defaults).
const S3_USER: &str = "minio";
const S3_PASSWORD: &str = "minio123";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("test") => test(),
        Some("build") => build_plugins().and_then(|()| build_host()).and_then(|()| warm_cache()),
        Some("plugins") => build_plugins(),
        Some("install") => install(&args[1..]),
        Some("dist") => dist(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 run [SPEC] [-- ARGS]  build everything, then run the flagship job ({FLAGSHIP}, with local\n  \
                                       servers) and look two rows up; or `runner run SPEC ARGS`\n  \
                 test                  build the plugins, run all tests, check formatting and lints\n  \
                 build                 build the plugins and the host\n  \
                 plugins               build the plugins (wasm32-wasip2 components)\n  \
                 install [--root DIR]  put the built `runner` on the PATH (~/.cargo/bin, or DIR/bin)\n  \
                 dist DIR [--debug]    what the container image holds: runner, plugins, compiled cache"
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

/// The workspace root: the parent of this crate's directory, taken from the environment `cargo
/// run` sets, not from the path compiled in: checkouts that share a target directory (`.ci/run`'s
/// cache) run each other's `xtask` binary when its sources are the same.
fn root() -> PathBuf {
    let manifest =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from);
    manifest.parent().expect("xtask lives in the workspace").to_path_buf()
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

/// The target plugins build for.
const WASM_TARGET: &str = "wasm32-wasip2";

/// Makes sure the toolchain that builds the plugins has the wasm target, adding it with rustup
/// if not, and saying so. rust-toolchain.toml asks for it, but rustup installs a toolchain
/// file's targets only when it installs the toolchain itself: not when `1.95.0` is a link to an
/// installed stable (as `.ci/run` makes it), nor when the toolchain came from elsewhere.
fn ensure_wasm_target() -> Result<(), String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .current_dir(root().join("plugins"))
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if has_target(&sysroot, WASM_TARGET) {
        return Ok(());
    }
    eprintln!(
        "xtask: the toolchain at {} has no {WASM_TARGET} target: adding it (rustup target add)",
        sysroot.display()
    );
    // A toolchain that is a link to another (`1.95.0` to `stable`) is one rustup cannot add to:
    // add the target to the toolchain it links to.
    let resolved = std::fs::canonicalize(&sysroot).unwrap_or_else(|_| sysroot.clone());
    let toolchain = resolved.file_name().map(|name| name.to_string_lossy().into_owned());
    let mut add = Command::new("rustup");
    add.current_dir(root().join("plugins")).args(["target", "add", WASM_TARGET]);
    if let Some(toolchain) = &toolchain {
        add.args(["--toolchain", toolchain]);
    }
    step(&format!("adding the {WASM_TARGET} target"), &mut add).map_err(|e| {
        format!("{e}: install it with `rustup target add {WASM_TARGET}` (the plugins are built for it)")
    })?;
    if has_target(&sysroot, WASM_TARGET) {
        Ok(())
    } else {
        Err(format!("rustup added {WASM_TARGET}, but {} still has no library for it", sysroot.display()))
    }
}

/// Whether the toolchain at `sysroot` has the standard library of `target`.
fn has_target(sysroot: &Path, target: &str) -> bool {
    sysroot.join("lib/rustlib").join(target).join("lib").is_dir()
}

fn build_plugins() -> Result<(), String> {
    ensure_wasm_target()?;
    step(
        "building plugins (wasm32-wasip2)",
        cargo().current_dir(root().join("plugins")).args(["build", "--release", "--target", WASM_TARGET]),
    )
}

fn build_host() -> Result<(), String> {
    step(
        "building the runner (and the local S3 server it runs the flagship job against)",
        cargo().args(["build", "--package", "runner", "--bin", "runner", "--example", "s3_server"]),
    )
}

/// The built `runner`.
fn runner() -> Command {
    let mut command = Command::new(target_dir().join("debug/runner"));
    command.current_dir(root());
    command
}

/// Compiles the plugins of the local pipelines into the runner's cache (`runner validate`
/// loads, and so compiles, each plugin): the first `runner run` a user types is warm.
fn warm_cache() -> Result<(), String> {
    for spec in LOCAL_SPECS {
        step(
            &format!("compiling the plugins of {spec} into the runner's cache"),
            runner().args(["validate", spec]).stdout(Stdio::null()),
        )?;
    }
    Ok(())
}

/// The host's target directory: `$CARGO_TARGET_DIR` (relative to the root), else `target`.
fn target_dir() -> PathBuf {
    root().join(std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from))
}

/// `cargo install` of the runner, reusing the workspace's build (the dev profile, whose
/// dependencies are optimised): `runner` is then on the PATH, in `~/.cargo/bin` (or `DIR/bin`
/// for `--root DIR`). For a release build, `cargo install --locked --path runner`.
fn install(args: &[String]) -> Result<(), String> {
    let root_dir = match args {
        [] => None,
        [flag, dir] if flag == "--root" => Some(dir),
        _ => return Err("usage: cargo xtask install [--root DIR]".into()),
    };
    let command = |offline: bool| {
        let mut command = cargo();
        command
            .args(["install", "--locked", "--debug", "--force", "--path", "runner", "--target-dir"])
            .arg(target_dir());
        if offline {
            command.arg("--offline"); // what the build fetched is enough: no index update
        }
        if let Some(dir) = root_dir {
            command.arg("--root").arg(dir);
        }
        command
    };
    step("installing runner (cargo install)", &mut command(true))
        .or_else(|_| step("installing runner (cargo install, fetching what is missing)", &mut command(false)))
}

/// The plugins a distribution carries: the examples and the predictor (not the test fixtures).
const DIST_PLUGINS: [&str; 4] = ["onnx_predictor.wasm", "derive.wasm", "generate.wasm", "dir_sink.wasm"];

/// Lays out in `DIR` what the container image holds: the runner, the plugins where the
/// pipelines look for them, the pipelines, the Iris models, and the plugins compiled into
/// `cache/` (so a pod never pays Cranelift); modes 755/644, so another user (the image's
/// `runner`) can read and run everything, and no one but the owner can write the cache.
fn dist(args: &[String]) -> Result<(), String> {
    let (dir, debug) = match args {
        [dir] => (PathBuf::from(dir), false),
        [dir, flag] if flag == "--debug" => (PathBuf::from(dir), true),
        _ => return Err("usage: cargo xtask dist DIR [--debug]".into()),
    };
    let dir = if dir.is_absolute() { dir } else { std::env::current_dir().map_err(|e| e.to_string())?.join(dir) };
    build_plugins()?;
    let profile = if debug { "debug" } else { "release" };
    let mut build = cargo();
    build.args(["build", "--package", "runner", "--bin", "runner"]);
    if !debug {
        build.arg("--release");
    }
    step(&format!("building the runner ({profile})"), &mut build)?;
    let _ = std::fs::remove_dir_all(&dir);
    let copy = |from: &Path, to: &Path| -> Result<(), String> {
        std::fs::create_dir_all(to.parent().expect("a file in a folder")).map_err(|e| e.to_string())?;
        std::fs::copy(from, to).map(drop).map_err(|e| format!("{} -> {}: {e}", from.display(), to.display()))
    };
    copy(&target_dir().join(profile).join("runner"), &dir.join("bin/runner"))?;
    let plugins = root().join("plugins/target/wasm32-wasip2/release");
    for plugin in DIST_PLUGINS {
        copy(&plugins.join(plugin), &dir.join("plugins/target/wasm32-wasip2/release").join(plugin))?;
    }
    for folder in ["pipelines", "models/iris"] {
        for entry in std::fs::read_dir(root().join(folder)).map_err(|e| e.to_string())? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_file() {
                copy(&path, &dir.join(folder).join(path.file_name().expect("a file name")))?;
            }
        }
    }
    for plugin in DIST_PLUGINS {
        let wasm = dir.join("plugins/target/wasm32-wasip2/release").join(plugin);
        step(
            &format!("compiling {plugin} into {}/cache", dir.display()),
            Command::new(dir.join("bin/runner"))
                .args(["plugin", "inspect", "--cache-dir"])
                .arg(dir.join("cache"))
                .arg(&wasm)
                .stdout(Stdio::null()),
        )?;
    }
    readable_by_all(&dir)?;
    eprintln!(
        "xtask: {} holds bin/runner, {} plugins compiled in cache/, pipelines/, models/iris/",
        dir.display(),
        DIST_PLUGINS.len()
    );
    Ok(())
}

/// Directories 755, files 644 (the binary 755): anyone may read and run, only the owner write.
fn readable_by_all(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let executable = meta.is_dir() || meta.permissions().mode() & 0o100 != 0;
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| e.to_string())? {
            readable_by_all(&entry.map_err(|e| e.to_string())?.path())?;
        }
    }
    Ok(())
}

fn run(args: &[String]) -> Result<(), String> {
    build_plugins()?;
    build_host()?;
    warm_cache()?;
    // From here on `runner` is a command of its own, as the docs write it.
    install(&[])?;
    match args.first() {
        Some(spec) if spec != "--" => {
            let rest: Vec<&String> = args[1..].iter().skip_while(|a| *a == "--").collect();
            step(&format!("runner run {spec}"), runner().args(["run", spec]).args(rest))
        }
        _ => flagship(),
    }
}

/// The flagship job as the original flow ran it: the data and XGBoost's model in a bucket,
/// predictions into Redis, read back by key.
fn flagship() -> Result<(), String> {
    if Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_err() {
        eprintln!(
            "xtask: redis-server is not installed, so the flagship job ({FLAGSHIP}: S3 -> scoring -> Redis) cannot \
             run here.\n       Install it with `sudo apt-get install redis-server` (Debian, Ubuntu) and run \
             `cargo xtask run` again.\n       Meanwhile, the same scoring on local files: {LOCAL_SPEC}"
        );
        return step(&format!("runner run {LOCAL_SPEC}"), runner().args(["run", LOCAL_SPEC]));
    }
    let servers = Servers::start()?;
    let with_servers = |command: &mut Command| {
        command
            .env("S3_ENDPOINT", &servers.s3_endpoint)
            .env("S3_BUCKET", "batch")
            .env("AWS_ACCESS_KEY_ID", S3_USER)
            .env("AWS_SECRET_ACCESS_KEY", S3_PASSWORD)
            .env("REDIS_URL", &servers.redis_url);
    };
    eprintln!(
        "xtask: a local S3 server at {} holds s3://batch/data/iris.csv (and .parquet) and s3://batch/artifact/model.json; \
         redis-server listens at {}",
        servers.s3_endpoint, servers.redis_url
    );
    let mut run = runner();
    run.args(["run", FLAGSHIP]);
    with_servers(&mut run);
    step(&format!("runner run {FLAGSHIP}"), &mut run)?;
    for row in [["5.1", "3.5", "1.4", "0.2"], ["6.3", "3.3", "6.0", "2.5"]] {
        let mut lookup = runner();
        lookup.args(["lookup", "--show-key", FLAGSHIP]).args(row);
        with_servers(&mut lookup);
        step(&format!("runner lookup {FLAGSHIP} {}", row.join(" ")), &mut lookup)?;
    }
    eprintln!("xtask: done; the servers are stopped. With your own (docker compose up -d), see the README.");
    Ok(())
}

/// The servers of the flagship job, stopped (by pid) and their data removed when dropped.
struct Servers {
    children: Vec<Child>,
    dir: PathBuf,
    s3_endpoint: String,
    redis_url: String,
}

impl Servers {
    fn start() -> Result<Servers, String> {
        let dir = std::env::temp_dir().join(format!("etl-runner-flagship-{}", std::process::id()));
        let mut servers = Servers { children: Vec::new(), dir, s3_endpoint: String::new(), redis_url: String::new() };
        // The bucket `batch`, as the original flow found it: a folder under the server's root.
        let models = root().join("models/iris");
        for (file, key) in [
            ("iris.csv", "data/iris.csv"),
            ("iris.parquet", "data/iris.parquet"),
            ("model.json", "artifact/model.json"),
            ("model.onnx", "artifact/model.onnx"),
        ] {
            let to = servers.dir.join("batch").join(key);
            std::fs::create_dir_all(to.parent().expect("a key has a folder")).map_err(|e| e.to_string())?;
            std::fs::copy(models.join(file), &to).map_err(|e| format!("{}: {e}", to.display()))?;
        }
        let mut s3 = Command::new(target_dir().join("debug/examples/s3_server"))
            .arg(&servers.dir)
            .args([S3_USER, S3_PASSWORD])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the local S3 server: {e}"))?;
        let stdout = s3.stdout.take().expect("piped");
        servers.children.push(s3);
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
        servers.s3_endpoint =
            line.trim().strip_prefix("listening on ").ok_or("the local S3 server did not start")?.to_string();

        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let redis = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        servers.children.push(redis);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("redis-server did not listen on port {port} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        servers.redis_url = format!("redis://127.0.0.1:{port}/0");
        Ok(servers)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the tests record the tests they skipped (`runner/tests/common`'s `skip`), one file each.
fn skipped_dir() -> PathBuf {
    target_dir().join("tmp/skipped")
}

/// The tests skipped in this run, `binary::test: what was missing (how to get it)`, sorted.
fn skipped_tests() -> Vec<String> {
    let mut skipped: Vec<String> = std::fs::read_dir(skipped_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .flat_map(|text| text.lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    skipped.sort();
    skipped.dedup();
    skipped
}

/// Every check, then the list of the tests that were skipped because this machine lacks what
/// they need: a run that passed while skipping says so at the end, never just "ok".
fn test() -> Result<(), String> {
    let _ = std::fs::remove_dir_all(skipped_dir());
    let result = checks();
    let skipped = skipped_tests();
    if !skipped.is_empty() {
        eprintln!(
            "\nxtask: {} tests were SKIPPED, so this run does not show they pass (CI=true makes a skip a failure; \
             .ci/run installs what they need):",
            skipped.len()
        );
        skipped.iter().for_each(|line| eprintln!("  {line}"));
    }
    match (&result, skipped.len()) {
        (Ok(()), 0) => eprintln!("xtask: every check and test passed"),
        (Ok(()), n) => eprintln!("xtask: the checks passed, and every test that ran; {n} were skipped (above)"),
        (Err(_), _) => {}
    }
    result
}

fn checks() -> Result<(), String> {
    // Cheap checks first, so a formatting or lint slip fails CI in minutes, not after the tests.
    step("checking formatting", cargo().args(["fmt", "--all", "--check"]))?;
    step(
        "checking formatting (plugins)",
        cargo().current_dir(root().join("plugins")).args(["fmt", "--all", "--check"]),
    )?;
    step("linting", cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    // Plugins are linted for their own target: it must be there before clippy builds for it.
    ensure_wasm_target()?;
    step(
        "linting plugins",
        cargo().current_dir(root().join("plugins")).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--target",
            WASM_TARGET,
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
            .args(["test", "--package", "forest", "--target", WASM_TARGET]),
    )?;
    // Every test binary runs even when one fails, so one CI log shows every failure.
    step("testing the runner", cargo().args(["test", "--workspace", "--no-fail-fast"]))
}
