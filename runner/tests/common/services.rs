//! Real servers for the tests, each on its own free loopback port and stopped when dropped:
//! - Redis: Debian's `redis-server`, started as a child process (stopped by pid).
//! - S3: `s3s-fs`, an S3-protocol server, embedded in the test process and serving a
//!   temporary directory (a bucket is a folder under it).
//!
//! A test that needs a missing server is skipped ([`super::skip`]: listed at the end of `cargo
//! xtask test`), except when `CI=true`: then it fails, so CI can never pass by skipping.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The credentials the embedded S3 server accepts.
pub const S3_ACCESS_KEY: &str = "test-access-key";
pub const S3_SECRET_KEY: &str = "test-secret-key-not-for-prod";

/// Whether the tests' Python ([`super::python`]) can import every module of `modules`; when it
/// cannot, the calling test is skipped ([`super::skip`]: a failure under `CI=true`; `install`
/// says how to get them).
pub fn python_has(modules: &[&str], install: &str) -> bool {
    let script = format!("import {}", modules.join(", "));
    let found = Command::new(super::python())
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        super::skip(&format!("Python modules {modules:?}"), install);
    }
    found
}

/// Whether `program` is installed; when it is not, the calling test is skipped ([`super::skip`]).
pub fn available(program: &str) -> bool {
    let found = Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        let package = match program {
            "redis-server" | "redis-cli" => "redis-server",
            "script" => "bsdutils",
            other => other,
        };
        super::skip(&format!("`{program}`"), &format!("run .ci/run, or apt-get install {package}"));
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
    tls: Option<Tls>,
}

/// A TLS port besides the plain one, with a certificate for 127.0.0.1 signed by a test CA.
struct Tls {
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server, or returns `None` (test skipped) when redis-server is not installed.
    pub fn start() -> Option<RedisServer> {
        if !available("redis-server") {
            return None;
        }
        let mut server = RedisServer { child: None, port: free_port(), tls: None };
        server.restart();
        Some(server)
    }

    /// Starts a server that also listens with TLS ([`RedisServer::tls_url`]), its certificate
    /// signed by a CA of its own ([`RedisServer::ca_file`]); needs `openssl`.
    pub fn start_tls() -> Option<RedisServer> {
        if !available("redis-server") || !available("openssl") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl").args(args).current_dir(dir.path()).output().expect("run openssl");
            assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        let key = ["-newkey", "rsa:2048", "-nodes"];
        openssl(
            &[
                &["req", "-x509"][..],
                &key,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA"],
            ]
            .concat(),
        );
        openssl(&[&["req"][..], &key, &["-keyout", "key.pem", "-out", "req.csr", "-subj", "/CN=127.0.0.1"]].concat());
        std::fs::write(dir.path().join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "req.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        let mut server = RedisServer { child: None, port: free_port(), tls: Some(Tls { port: free_port(), dir }) };
        server.restart();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The `rediss://` URL of a server started with [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.tls.as_ref().expect("started with TLS").port)
    }

    /// The CA that signed the TLS certificate, for `SSL_CERT_FILE`.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.tls.as_ref().expect("started with TLS").dir.path().join("ca.pem")
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

    /// Stops the server (SIGSTOP) or lets it go on (SIGCONT): a server that stops answering,
    /// its data kept.
    pub fn pause(&self, paused: bool) {
        let pid = self.child.as_ref().expect("the server runs").id();
        super::signal(pid, if paused { libc::SIGSTOP } else { libc::SIGCONT });
    }

    /// Keys in the server's database 0.
    pub fn dbsize(&self) -> usize {
        redis::cmd("DBSIZE").query(&mut self.connection()).unwrap()
    }

    /// Starts the server (again) on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let mut command = Command::new("redis-server");
        command.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        if let Some(tls) = &self.tls {
            let file = |name: &str| tls.dir.path().join(name);
            command
                .args(["--tls-port", &tls.port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(file("cert.pem"))
                .arg("--tls-key-file")
                .arg(file("key.pem"))
                .arg("--tls-ca-cert-file")
                .arg(file("ca.pem"));
        }
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start redis-server");
        self.child = Some(child);
        wait_for_port(self.port, "redis-server");
        if let Some(tls) = &self.tls {
            wait_for_port(tls.port, "redis-server (TLS)");
        }
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
    served: Arc<AtomicU64>,
}

impl S3Server {
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut server = S3Server { port, root, stop: None, thread: None, served: Arc::default() };
        server.serve(listener);
        server
    }

    /// Serves the root directory on `listener` in a thread of its own, until [`S3Server::stop`].
    fn serve(&mut self, listener: TcpListener) {
        let (stop, thread) =
            super::s3_fs::serve(self.root.path(), listener, S3_ACCESS_KEY, S3_SECRET_KEY, self.served.clone())
                .expect("serve S3");
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

    /// `runner` with the environment `pipelines/iris.toml` reads: this server's endpoint and
    /// credentials, and `redis_url`.
    pub fn flagship(&self, redis_url: &str) -> Command {
        super::plugins();
        let mut command = super::runner();
        command
            .env("S3_ENDPOINT", self.endpoint())
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
            .env("REDIS_URL", redis_url)
            .env_remove("S3_BUCKET");
        command
    }

    /// Bytes of object bodies the server has sent so far.
    pub fn bytes_served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
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

    /// The parts of multipart uploads the server holds (uploaded, not yet completed or aborted).
    pub fn upload_parts(&self) -> Vec<String> {
        let mut parts: Vec<String> = std::fs::read_dir(self.root.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(".upload_id-"))
            .collect();
        parts.sort();
        parts
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

/// A Redis Cluster of three masters, `redis-server --cluster-enabled yes` on free loopback ports
/// (each with its bus port, +10000), joined by `redis-cli --cluster create`; no replicas, or one
/// per master.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: tempfile::TempDir,
    /// Every node's `requirepass` (and `masterauth`), if any.
    password: Option<String>,
}

impl RedisCluster {
    /// Starts a cluster, or returns `None` (test skipped) when redis-server is not installed.
    pub fn start() -> Option<RedisCluster> {
        Self::start_with(None, 0)
    }

    /// A cluster whose nodes ask for `password`.
    pub fn start_with_password(password: &str) -> Option<RedisCluster> {
        Self::start_with(Some(password.to_string()), 0)
    }

    /// Three masters, each with a replica (six nodes), to fail over to.
    pub fn start_with_replicas() -> Option<RedisCluster> {
        Self::start_with(None, 1)
    }

    fn start_with(password: Option<String>, replicas: usize) -> Option<RedisCluster> {
        if !available("redis-server") || !available("redis-cli") {
            return None;
        }
        let mut ports = Vec::new();
        while ports.len() < 3 * (1 + replicas) {
            // A node also listens on port + 10000 (the cluster bus): both must be free.
            let port = free_port();
            if port < 55_000 && !ports.contains(&port) && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
                ports.push(port);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let children = ports.iter().map(|_| None).collect();
        let mut cluster = RedisCluster { ports, children, dir, password };
        for node in 0..cluster.ports.len() {
            cluster.restart(node);
        }
        let nodes: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let status = cluster
            .cli(cluster.ports[0])
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        cluster.wait_ok();
        if replicas > 0 {
            // A replica that never finished its first sync is refused a failover.
            cluster.wait_for(|mut node| {
                let info =
                    String::from_utf8_lossy(&node.args(["info", "replication"]).output().unwrap().stdout).into_owned();
                info.contains("role:master") || info.contains("master_link_status:up")
            });
        }
        Some(cluster)
    }

    /// `redis-cli` for the node at `port`, with the cluster's password.
    pub fn cli(&self, port: u16) -> Command {
        let mut command = Command::new("redis-cli");
        command.args(["-p", &port.to_string()]);
        if let Some(password) = &self.password {
            command.args(["--no-auth-warning", "-a", password]);
        }
        command
    }

    /// Waits until every running node says `cluster_state:ok`.
    pub fn wait_ok(&self) {
        self.wait_for(|mut node| {
            let output = node.args(["cluster", "info"]).output();
            output.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
        });
    }

    /// Waits (30 s at most) until `ready` holds for every running node, given `redis-cli` for it.
    fn wait_for(&self, ready: impl Fn(Command) -> bool) {
        let started = Instant::now();
        while !self.running().all(|port| ready(self.cli(port))) {
            assert!(started.elapsed() < Duration::from_secs(30), "the cluster did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis+cluster://` with every node as a seed (and the password, if any).
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}{}", self.auth(), nodes.join(","))
    }

    /// `:password@` for a URL, or nothing.
    fn auth(&self) -> String {
        self.password.as_ref().map(|p| format!(":{p}@")).unwrap_or_default()
    }

    /// Kills a node (SIGKILL, by pid).
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.children[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops a node (SIGSTOP) or lets it go on (SIGCONT): a node that stops answering for a
    /// while, its data kept.
    pub fn pause(&self, node: usize, paused: bool) {
        let pid = self.children[node].as_ref().expect("the node runs").id();
        super::signal(pid, if paused { libc::SIGSTOP } else { libc::SIGCONT });
    }

    /// Starts a node (again): it rejoins the cluster from its nodes.conf, with no data.
    pub fn restart(&mut self, node: usize) {
        self.kill(node);
        let port = self.ports[node];
        let dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = Command::new("redis-server");
        command
            .current_dir(&dir)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"])
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--save", "", "--appendonly", "no"]);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password, "--masterauth", password]);
        }
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start redis-server");
        self.children[node] = Some(child);
        wait_for_port(port, "redis-server (cluster node)");
    }

    /// The ports of the nodes running (not killed).
    fn running(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.iter().zip(&self.children).filter(|(_, child)| child.is_some()).map(|(&port, _)| port)
    }

    /// The running nodes that are masters (a replica holds copies of its master's keys).
    pub fn masters(&self) -> Vec<usize> {
        (0..self.ports.len())
            .filter(|&node| self.children[node].is_some())
            .filter(|&node| {
                let output = self.cli(self.ports[node]).arg("role").output().unwrap();
                String::from_utf8_lossy(&output.stdout).starts_with("master")
            })
            .collect()
    }

    /// Every key of every running master and its string value, sorted.
    pub fn contents(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for port in self.masters().into_iter().map(|node| self.ports[node]) {
            let url = format!("redis://{}127.0.0.1:{port}/0", self.auth());
            let mut connection = redis::Client::open(url).unwrap().get_connection().unwrap();
            let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
            for chunk in keys.chunks(1000) {
                // One GET per key: a node refuses a multi-key command across slots.
                let mut pipe = redis::pipe();
                chunk.iter().for_each(|key| {
                    pipe.get(key);
                });
                let values: Vec<String> = pipe.query(&mut connection).unwrap();
                pairs.extend(chunk.iter().cloned().zip(values));
            }
        }
        pairs.sort();
        pairs
    }

    /// The cluster node ids, by node.
    pub fn node_ids(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|&port| {
                let output = self.cli(port).args(["cluster", "myid"]).output().unwrap();
                String::from_utf8_lossy(&output.stdout).trim().to_string()
            })
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in 0..self.children.len() {
            self.kill(node);
        }
    }
}

/// A Prometheus Pushgateway (Debian's `prometheus-pushgateway`) on a free loopback port, its
/// metrics kept in memory only.
pub struct Pushgateway {
    child: Child,
    pub port: u16,
}

impl Pushgateway {
    /// Starts one, or returns `None` (test skipped) when it is not installed.
    pub fn start() -> Option<Pushgateway> {
        if !available("prometheus-pushgateway") {
            return None;
        }
        let port = free_port();
        let child = Command::new("prometheus-pushgateway")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus-pushgateway");
        wait_for_port(port, "prometheus-pushgateway");
        Some(Pushgateway { child, port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What it serves at `/metrics`: the text format, every pushed group's samples.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
    }

    /// The value of the sample `name{labels}` whose labels include every one of `labels`
    /// (`job="x"`), if there is one.
    pub fn value(&self, name: &str, labels: &[&str]) -> Option<f64> {
        self.metrics()
            .lines()
            .filter(|line| line.starts_with(&format!("{name}{{")))
            .find(|line| labels.iter().all(|label| line.contains(label)))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
