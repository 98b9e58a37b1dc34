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

/// How to get the tests' Python packages.
pub const PIP_INSTALL: &str = "run .ci/run, which makes .venv from .ci/requirements.txt";

/// The virtual environment `.ci/run` makes for the tests' Python (`.venv` at the root, from
/// `.ci/requirements.txt`), if there is one.
fn venv() -> Option<PathBuf> {
    Some(root().join(".venv")).filter(|venv| venv.join("bin/python").exists())
}

/// The Python the tests run: the repository's virtual environment's, else `python3`.
pub fn python() -> PathBuf {
    venv().map_or_else(|| PathBuf::from("python3"), |venv| venv.join("bin/python"))
}

/// A command installed with the tests' Python packages (`componentize-py`,
/// `kubernetes-validate`): the virtual environment's, else whatever the PATH finds.
pub fn python_tool(name: &str) -> PathBuf {
    venv().map(|venv| venv.join("bin").join(name)).filter(|tool| tool.exists()).unwrap_or_else(|| PathBuf::from(name))
}

/// This test cannot run here: `missing` is not on this machine (`install` says how to get it).
/// Under `CI=true` that fails the test: CI never passes by skipping. Otherwise the test is
/// recorded as skipped, for `cargo xtask test` to list at the end, and the caller returns.
pub fn skip(missing: &str, install: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{missing} is missing, and CI=true forbids skipping ({install})"
    );
    eprintln!("SKIPPED: {missing} ({install}); CI=true makes this a failure");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped");
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = dir.join(format!("{}-{}-{n}", env!("CARGO_CRATE_NAME"), std::process::id()));
    let line = format!("{}::{test}: {missing} ({install})\n", env!("CARGO_CRATE_NAME"));
    let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(file, line));
}

/// The compiled-component cache shared by all tests.
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

/// The `runner` binary under test: this build's, or `$RUNNER_UNDER_TEST` (to run the suite
/// against another build, such as the one before a fix, and see which tests catch the defect).
pub fn runner_binary() -> PathBuf {
    std::env::var_os("RUNNER_UNDER_TEST").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_runner")), PathBuf::from)
}

/// `runner` with the shared cache, and no inherited logging settings.
pub fn runner() -> Command {
    let mut command = Command::new(runner_binary());
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

/// Sends `signal` (`libc::SIGTERM`, ...) to the process `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: `kill` has no memory effects; the pid is a child this test started.
    let sent = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
}

/// A child's standard error, read line by line on a thread of its own as the child writes it:
/// a test waits for a line (an event of the run) instead of sleeping, then takes all of it.
pub struct Lines {
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Lines {
    /// Reads the child's piped standard error.
    pub fn of(child: &mut std::process::Child) -> Lines {
        use std::io::BufRead;
        let stderr = child.stderr.take().expect("the child's stderr is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { lines, seen: Vec::new(), reader: Some(reader) }
    }

    /// Waits (at most `within`) for a line that contains `text`; panics with what came so far.
    pub fn wait_for(&mut self, text: &str, within: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        if let Some(line) = self.seen.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with `{text}` within {within:?}; so far:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Everything the child wrote, once it has closed its standard error (exited).
    pub fn rest(mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.seen.extend(self.lines.try_iter());
        self.seen.join("\n") + "\n"
    }
}

/// Waits (at most `within`) until `ready` holds, checking every 10 ms; panics with `what`.
pub fn wait_until(what: &str, within: std::time::Duration, mut ready: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !ready() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The files in `dir` whose names contain `part` (a sink's temporaries: `.partial`).
pub fn files_named(dir: &Path, part: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|name| name.contains(part));
    names.sort();
    names
}

/// Waits for `child` and returns its output and its peak resident size in bytes (`wait4`'s
/// `ru_maxrss`, this child's alone).
pub fn wait_measured(mut child: std::process::Child) -> (Output, u64) {
    use std::io::Read;
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for this child's pid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4: {}", std::io::Error::last_os_error());
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    use std::os::unix::process::ExitStatusExt;
    let output = Output { status: std::process::ExitStatus::from_raw(status), stdout, stderr };
    (output, usage.ru_maxrss as u64 * 1024)
}
