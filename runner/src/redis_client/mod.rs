//! The Redis client the runner's steps share (the Redis sink, Redis dead letters, `runner
//! lookup`): one server or a Redis Cluster behind one connection type, connecting with retries
//! through transient failures, and URLs shown without their password.
//!
//! A URL names one server, `redis://[user:password@]host:port[/db]` (`rediss://` for TLS, which
//! trusts the system's certificate authorities, or those in `SSL_CERT_FILE`), or a
//! cluster by some of its nodes, `redis+cluster://[user:password@]host1:7000,host2:7001`
//! (`rediss+cluster://`): the client learns the slot map from them and follows it (`cluster`).

mod cluster;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RetryMethod, Value};

use crate::format::redact_url;

pub use cluster::{Cluster, Trip, slot};

/// A connection to one server or to a cluster; cheap to clone (clones share it).
#[derive(Clone)]
pub enum Connection {
    Node(ConnectionManager),
    Cluster(Arc<Cluster>),
}

impl Connection {
    /// How many servers a round trip is spread over: one, or the cluster's nodes that own slots.
    pub async fn nodes(&self) -> usize {
        match self {
            Connection::Node(_) => 1,
            Connection::Cluster(cluster) => cluster.nodes().await,
        }
    }

    /// An empty round trip, with room for about `commands` commands.
    pub async fn round_trip(&self, commands: usize) -> RoundTrip {
        match self {
            Connection::Node(_) => RoundTrip::Node(NodeTrip::new(commands)),
            Connection::Cluster(cluster) => RoundTrip::Cluster(cluster.trip(commands).await),
        }
    }

    /// Sends what is left of a round trip: to one server as one pipeline; to a cluster, each
    /// node the commands for its slots as one pipeline, all at once. What the store
    /// acknowledged leaves the trip, and so does what it refused for good
    /// ([`RoundTrip::take_refused`]); after an error, sending the trip again resends the rest
    /// (after a dropped connection, for one server: all of it).
    pub async fn send(&mut self, trip: &mut RoundTrip) -> Result<(), RedisError> {
        match (self, trip) {
            (Connection::Node(connection), RoundTrip::Node(trip)) => trip.send(connection).await,
            (Connection::Cluster(cluster), RoundTrip::Cluster(trip)) => cluster.send(trip).await,
            _ => Err(RedisError::from((ErrorKind::Client, "a round trip sent over another kind of connection"))),
        }
    }
}

/// The rows of a batch a command writes: one row, or for an `MSET` a run of them.
pub type Rows = std::ops::Range<u32>;

/// A command the store refused for good, for a reason that lies with its rows (a key holding
/// another type: `WRONGTYPE`), and those rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rows: Rows,
    pub reason: String,
}

/// A round trip's commands, as [`Connection::round_trip`] made it.
pub enum RoundTrip {
    /// One server: one pipeline.
    Node(NodeTrip),
    /// A cluster: a pipeline per node, for single-key commands.
    Cluster(Trip),
}

impl RoundTrip {
    /// Adds a command with a single key (so a cluster can route it) that writes `rows`.
    pub fn add(&mut self, cmd: Cmd, rows: Rows) {
        match self {
            RoundTrip::Node(trip) => {
                trip.pipe.add_command(cmd);
                trip.rows.push(rows);
            }
            RoundTrip::Cluster(trip) => trip.add(cmd, rows),
        }
    }

    /// The commands the store refused for good so far, taken out of the trip.
    pub fn take_refused(&mut self) -> Vec<Refusal> {
        match self {
            RoundTrip::Node(trip) => std::mem::take(&mut trip.refused),
            RoundTrip::Cluster(trip) => trip.take_refused(),
        }
    }
}

/// The commands of a round trip to one server, each with the rows it writes, and those the
/// server refused for good.
pub struct NodeTrip {
    /// Every reply comes back, errors included, so each command's fate is known.
    pipe: Pipeline,
    rows: Vec<Rows>,
    refused: Vec<Refusal>,
}

impl NodeTrip {
    fn new(commands: usize) -> NodeTrip {
        NodeTrip { pipe: reply_per_command(commands), rows: Vec::with_capacity(commands), refused: Vec::new() }
    }

    async fn send(&mut self, connection: &mut ConnectionManager) -> Result<(), RedisError> {
        loop {
            if self.pipe.is_empty() {
                return Ok(());
            }
            // No replies (a dropped connection, a timeout): all of it is sent again.
            let replies: Vec<Value> = self.pipe.query_async(connection).await?;
            let (mut left, mut left_rows, mut failure) = (reply_per_command(0), Vec::new(), None);
            let mut split = false;
            for ((cmd, rows), reply) in self.pipe.cmd_iter().zip(std::mem::take(&mut self.rows)).zip(replies) {
                let Value::ServerError(e) = reply else { continue };
                let e = RedisError::from(e);
                if refuses_the_row(&e) {
                    // An `MSET` refused for one of its rows: each row again on its own, so the
                    // refusal lands on the row it is about and the others are written.
                    match split_mset(cmd, &rows) {
                        Some(sets) => {
                            split = true;
                            for (set, row) in sets {
                                left.add_command(set);
                                left_rows.push(row);
                            }
                        }
                        None => self.refused.push(Refusal { rows, reason: describe(&e) }),
                    }
                } else {
                    // Sent again: a transient error is retried, any other fails the run.
                    keep_worst(&mut failure, e);
                    left.add_command(cmd.clone());
                    left_rows.push(rows);
                }
            }
            (self.pipe, self.rows) = (left, left_rows);
            if let Some(failure) = failure {
                return Err(failure);
            }
            if !split {
                return Ok(());
            }
        }
    }
}

/// The `SET`s of a refused `MSET` of several rows, each with its row; `None` for any other
/// command.
fn split_mset(cmd: &Cmd, rows: &Rows) -> Option<Vec<(Cmd, Rows)>> {
    let mut args = cmd.args_iter();
    if rows.len() < 2 || !matches!(args.next(), Some(redis::Arg::Simple(b"MSET"))) {
        return None;
    }
    let args: Vec<&[u8]> = args
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => bytes,
            _ => b"",
        })
        .collect();
    let sets = args.chunks_exact(2).zip(rows.clone()).map(|(pair, row)| {
        let mut set = Cmd::with_capacity(3, 3 + pair[0].len() + pair[1].len());
        set.arg("SET").arg(pair[0]).arg(pair[1]);
        (set, row..row + 1)
    });
    Some(sets.collect())
}

/// A pipeline whose every command's reply comes back, errors included (none is ignored), so
/// redirections, refusals and failures can be told apart command by command.
fn reply_per_command(capacity: usize) -> Pipeline {
    let mut pipe = Pipeline::with_capacity(capacity);
    pipe.ignore_errors();
    pipe
}

/// Whether a server refused a command for a reason that lies with its rows, not with the
/// server: a key holding another type (`WRONGTYPE`), an ACL that denies the row's key (`NOPERM`
/// naming a key). Those rows go to the sink's error policy. Anything else is the server's state
/// or setup, the same for every row: out of memory, not authenticated, read only, loading, a
/// command the ACL denies or the server does not know (`NOPERM` for the command, `ERR`):
/// retried while it is transient, else failing the run, whatever the policy (rejecting every
/// row for it would be silent data loss).
pub fn refuses_the_row(e: &RedisError) -> bool {
    match e.code() {
        Some("WRONGTYPE") => true,
        Some("NOPERM") => e.detail().is_some_and(|detail| detail.contains(" key")),
        _ => false,
    }
}

/// Keeps in `failure` the error that should end the attempt: the first one, unless a later one
/// is not transient where it was (a refused command outranks a node that is down for now).
fn keep_worst(failure: &mut Option<RedisError>, e: RedisError) {
    if failure.as_ref().is_none_or(|kept| transient(kept) && !transient(&e)) {
        *failure = Some(e);
    }
}

/// Single commands (`GET`, `RPUSH`...) work on both: a cluster routes each by its key.
impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Node(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => Box::pin(async move { c.query(cmd).await }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Node(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(_) => Box::pin(async {
                Err(RedisError::from((ErrorKind::Client, "a cluster takes round trips through Connection::send")))
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(c) => c.get_db(),
            Connection::Cluster(_) => 0,
        }
    }
}

/// What a Redis URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server: its URL.
    Node(String),
    /// A cluster: `redis://[user:password@]` (or `rediss://`) and its seed nodes' `host:port`.
    Cluster { prefix: String, seeds: Vec<String> },
}

/// Whether `url` names a Redis server or cluster (by its scheme; [`target`] checks the rest).
pub fn is_redis_url(url: &str) -> bool {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    matches!(scheme, Some("redis" | "rediss" | "redis+cluster" | "rediss+cluster" | "redis+unix" | "unix"))
}

/// Reads a Redis URL (see the module's doc); the error never shows the password. A password
/// holding `/`, `@`, `:`, `?`, `#` or `%` must be percent-encoded, as in any URL.
pub fn target(url: &str) -> Result<Target, String> {
    let invalid = |e: &dyn std::fmt::Display| {
        format!(
            "invalid Redis URL {}: {e} (characters such as `/ @ : ? # %` in a user name or password must be \
             percent-encoded: `/` is `%2F`)",
            redacted(url)
        )
    };
    let cluster = url.strip_prefix("redis+cluster://").map(|rest| ("redis", rest));
    let cluster = cluster.or_else(|| url.strip_prefix("rediss+cluster://").map(|rest| ("rediss", rest)));
    let Some((scheme, rest)) = cluster else {
        redis::Client::open(url).map_err(|e| invalid(&e))?;
        return Ok(Target::Node(url.to_string()));
    };
    // The user information ends at the last `@`: whatever it holds, it never reaches a host.
    let (userinfo, after) = match rest.rsplit_once('@') {
        Some((userinfo, after)) => (format!("{userinfo}@"), after),
        None => (String::new(), rest),
    };
    let (hosts, path) = after.split_once('/').unwrap_or((after, ""));
    if !path.is_empty() && path != "0" {
        return Err(format!("{}: a Redis Cluster has database 0 only", redacted(url)));
    }
    let seeds: Vec<String> = hosts.split(',').filter(|h| !h.is_empty()).map(str::to_string).collect();
    if seeds.is_empty() {
        return Err(format!("{}: no seed nodes (expected host:port,host:port)", redacted(url)));
    }
    let prefix = format!("{scheme}://{userinfo}");
    for seed in &seeds {
        redis::Client::open(format!("{prefix}{seed}")).map_err(|e| invalid(&e))?;
    }
    Ok(Target::Cluster { prefix, seeds })
}

/// The URL without its password, for messages, whatever it holds ([`redact_url`]); without
/// `://`, nothing of it is shown.
pub fn redacted(url: &str) -> String {
    if !url.contains("://") {
        return "(a URL that cannot be read)".into();
    }
    redact_url(url)
}

/// Whether sending again may succeed: the connection dropped, timed out, was refused (the server
/// restarts), or the server said to try again. Bad credentials or commands are not transient,
/// nor is a TLS handshake the client refused (an untrusted certificate, a name that does not match).
pub fn transient(e: &RedisError) -> bool {
    !matches!(e.kind(), ErrorKind::AuthenticationFailed)
        && !matches!(e.retry_method(), RetryMethod::NoRetry)
        && !tls_refused(e)
}

/// rustls reports a refused handshake as an I/O error of kind `InvalidData`, which a TCP stream
/// never raises otherwise.
fn tls_refused(e: &RedisError) -> bool {
    std::error::Error::source(e)
        .and_then(|source| source.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>())
        .and_then(|inner| inner.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
}

/// Runs `attempt` until it succeeds, fails for good, or `deadline` has passed.
pub async fn with_retries<T, F, Fut>(deadline: Duration, what: &str, mut attempt: F) -> Result<T, RedisError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RedisError>>,
{
    let started = Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if transient(&e) && started.elapsed() + backoff < deadline => {
                warn_now_and_then(|| {
                    format!("{what} failed ({}); retrying in {} ms", describe(&e), backoff.as_millis())
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Logs a retry at most once a second for the whole process: with many round trips in flight,
/// one outage would otherwise log a line per round trip and attempt.
fn warn_now_and_then(message: impl FnOnce() -> String) {
    static LAST: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
        *last = Some(Instant::now());
        tracing::warn!("{}", message());
    }
}

/// An error as a message: a cluster node's error as `node host:port: what it said`.
pub fn describe(e: &RedisError) -> String {
    match e.detail() {
        Some(detail) if detail.starts_with("node ") => detail.to_string(),
        _ => e.to_string(),
    }
}

/// The error after the last attempt: transient ones were retried until the deadline.
pub fn give_up(what: &str, e: &RedisError, deadline: Duration) -> anyhow::Error {
    if transient(e) {
        anyhow::anyhow!("{what}: {} (still failing after {} s of retries)", describe(e), deadline.as_secs())
    } else {
        anyhow::anyhow!("{what}: {}", describe(e))
    }
}

/// How a connection to one server behaves: 5 s to connect, 10 s for a reply, and `retries`
/// reconnections of its own before an error reaches the caller (who retries with backoff).
fn manager_config(retries: usize) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(retries)
}

/// Connects to the server or cluster `url` names, retrying through transient failures for
/// `retry_seconds`.
pub async fn connect(url: &str, retry_seconds: u64) -> anyhow::Result<Connection> {
    let shown = redacted(url);
    let deadline = Duration::from_secs(retry_seconds);
    let what = format!("connecting to {shown}");
    match target(url).map_err(anyhow::Error::msg)? {
        Target::Node(url) => {
            let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("{shown}: invalid Redis URL: {e}"))?;
            let config = manager_config(2);
            with_retries(deadline, &what, || ConnectionManager::new_with_config(client.clone(), config.clone()))
                .await
                .map(Connection::Node)
                .map_err(|e| give_up(&what, &e, deadline))
        }
        Target::Cluster { prefix, seeds } => {
            with_retries(deadline, &what, || Cluster::connect(prefix.clone(), seeds.clone()))
                .await
                .map(|cluster| Connection::Cluster(Arc::new(cluster)))
                .map_err(|e| give_up(&what, &e, deadline))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_their_seeds_and_hide_passwords() {
        assert_eq!(
            target("redis+cluster://u:secret@a:7000,b:7001"),
            Ok(Target::Cluster { prefix: "redis://u:secret@".into(), seeds: vec!["a:7000".into(), "b:7001".into()] })
        );
        assert_eq!(
            target("rediss+cluster://c:7000/0"),
            Ok(Target::Cluster { prefix: "rediss://".into(), seeds: vec!["c:7000".into()] })
        );
        assert!(target("redis+cluster://c:7000/3").unwrap_err().contains("database 0 only"));
        assert_eq!(target("redis://h:6379/2"), Ok(Target::Node("redis://h:6379/2".into())));
        assert_eq!(redacted("redis+cluster://u:secret@a:7000,b:7001"), "redis+cluster://u:***@a:7000,b:7001");
        assert_eq!(redacted("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redacted("redis://h:6379/0"), "redis://h:6379/0");
        assert!(!target("redis+cluster://u:secret@a:x,b").unwrap_err().contains("secret"));
    }

    /// Whatever a password holds, no message shows it: not `redacted`, not an invalid URL's
    /// error, for one server or a cluster.
    #[test]
    fn passwords_never_show_whatever_they_hold() {
        for password in ["p/ss", "p@ss", "p:ss", "p?ss", "p#ss", "p%ss", "a/b@c:d?e#f%g", "/@", "@/"] {
            for url in [
                format!("redis://:{password}@127.0.0.1:6379/0"),
                format!("redis://user:{password}@127.0.0.1:6379"),
                format!("rediss://user:{password}@h:6379/0?protocol=resp3"),
                format!("redis+cluster://user:{password}@a:7000,b:7001"),
                format!("rediss+cluster://:{password}@a:7000/0"),
                format!("redis:/:{password}@h:1"),
                format!("redis://{password}@h:1"),
                format!("redis+unix:///run/redis.sock?db=1&pass={password}"),
                format!("unix:///run/redis.sock?user=u&pass={password}"),
            ] {
                let shown = redacted(&url);
                assert!(!shown.contains(password), "{url} shown as {shown}");
                let checked = match target(&url) {
                    Ok(_) => String::new(),
                    Err(e) => e,
                };
                assert!(!checked.contains(password), "{url}: {checked}");
            }
        }
        assert_eq!(redacted("redis://:a/b@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redacted("redis://u:a@b@h:6379"), "redis://u:***@h:6379");
        assert_eq!(redacted("redis://secret@h:6379"), "redis://***@h:6379");
        assert_eq!(redacted("redis+unix:///run/r.sock?pass=x"), "redis+unix:///run/r.sock?***");
        assert_eq!(redacted("rediss://h:1/0?protocol=resp3&pass=x"), "rediss://h:1/0?protocol=resp3&pass=***");
    }
}
