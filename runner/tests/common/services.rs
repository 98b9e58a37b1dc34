//! Real servers for the tests, each on its own free loopback port and stopped when dropped:
//! - Redis: Debian's `redis-server`, started as a child process (stopped by pid).
//! - S3: `s3s-fs`, an S3-protocol server, embedded in the test process and serving a
//!   temporary directory (a bucket is a folder under it).
//!
//! A test that needs a missing server is skipped with a message, except when `CI=true`: then
//! it fails, so CI can never pass by skipping.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The credentials the embedded S3 server accepts.
pub const S3_ACCESS_KEY: &str = "test-access-key";
pub const S3_SECRET_KEY: &str = "test-secret-key-not-for-prod";

/// Whether Python 3 can import every module of `modules`; when it cannot, fails under `CI=true`
/// and otherwise prints why the calling test is skipped (`install` says how to get them).
pub fn python_has(modules: &[&str], install: &str) -> bool {
    let script = format!("import {}", modules.join(", "));
    let found = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Python cannot import {modules:?}, and CI=true forbids skipping ({install})"
        );
        eprintln!("SKIPPED: Python cannot import {modules:?} ({install}); CI=true makes this a failure");
    }
    found
}

/// Returns whether `program` is installed; when it is not, fails under `CI=true` and otherwise
/// prints why the calling test is skipped.
fn available(program: &str) -> bool {
    let found = Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "`{program}` is not installed, and CI=true forbids skipping (run .ci/run, or apt-get install redis-server)"
        );
        eprintln!("SKIPPED: `{program}` is not installed (apt-get install redis-server); CI=true makes this a failure");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, what: &str) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "{what} did not start listening on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `redis-server` child process with no persistence.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    /// Starts a server, or returns `None` (test skipped) when redis-server is not installed.
    pub fn start() -> Option<RedisServer> {
        if !available("redis-server") {
            return None;
        }
        let mut server = RedisServer { child: None, port: free_port() };
        server.restart();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A client connection, for assertions.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().expect("connect to the test Redis")
    }

    /// Kills the server (SIGKILL, by pid): its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        wait_for_port(self.port, "redis-server");
    }

    /// Every key and its string value, sorted: what a pipeline left behind.
    pub fn contents(&self) -> Vec<(String, String)> {
        self.contents_of(0)
    }

    /// [`RedisServer::contents`] of database `db`.
    pub fn contents_of(&self, db: u32) -> Vec<(String, String)> {
        let url = format!("redis://127.0.0.1:{}/{db}", self.port);
        let mut connection = redis::Client::open(url).unwrap().get_connection().expect("connect to the test Redis");
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
        let mut pairs = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(1000) {
            let values: Vec<String> = redis::cmd("MGET").arg(chunk).query(&mut connection).unwrap();
            pairs.extend(chunk.iter().cloned().zip(values));
        }
        pairs.sort();
        pairs
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An S3-protocol server (s3s-fs) serving a temporary directory, in a thread of this process.
pub struct S3Server {
    pub port: u16,
    root: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut server = S3Server { port, root, stop: None, thread: None };
        server.serve(listener);
        server
    }

    /// Serves the root directory on `listener` in a thread of its own, until [`S3Server::stop`].
    fn serve(&mut self, listener: TcpListener) {
        let (stop, thread) =
            super::s3_fs::serve(self.root.path(), listener, S3_ACCESS_KEY, S3_SECRET_KEY).expect("serve S3");
        self.stop = Some(stop);
        self.thread = Some(thread);
    }

    /// Stops serving: the port refuses connections and open ones are closed. The data stays.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Serves again, on the same port, what was there before [`S3Server::stop`].
    pub fn restart(&mut self) {
        self.stop();
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("bind the S3 port again");
        self.serve(listener);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (a folder).
    pub fn bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.root.path().join(bucket)).unwrap();
    }

    /// Stores an object, as an upload would.
    pub fn put(&self, bucket: &str, key: &str, from: &Path) {
        let path = self.root.path().join(bucket).join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::copy(from, path).unwrap();
    }

    /// An object's bytes, if it exists (read from the server's directory).
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.path().join(bucket).join(key)).ok()
    }

    /// The keys under `prefix` in `bucket`, sorted (files only, as the server stores objects).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let dir = self.root.path().join(bucket);
        let mut keys = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(next) = stack.pop() {
            for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(key) = path.strip_prefix(&dir) {
                    let key = key.to_string_lossy().into_owned();
                    if key.starts_with(prefix) {
                        keys.push(key);
                    }
                }
            }
        }
        keys.sort();
        keys
    }

    /// The `[s3]` table of a spec that reaches this server with the right credentials.
    pub fn spec_table(&self) -> String {
        format!(
            "[s3]\nendpoint = \"{}\"\naccess_key_id = \"{S3_ACCESS_KEY}\"\nsecret_access_key = \"{S3_SECRET_KEY}\"\n",
            self.endpoint()
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
