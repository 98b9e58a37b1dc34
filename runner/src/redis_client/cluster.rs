//! A Redis Cluster as the runner writes to it: every key hashed to its slot (CRC16 of the key,
//! or of its `{hash tag}`, modulo 16384), the commands of a round trip grouped, as they are
//! added, by the node that owns their slots (a [`Trip`]), and each node sent its group as one
//! pipeline, all nodes at once. A `MOVED` reply (the slot has a new owner) refreshes the slot
//! map and sends exactly those commands again; an `ASK` reply (the slot is moving) sends them to
//! the node named, after `ASKING`.
//!
//! Why not redis-rs's cluster client: its pipelines refuse keys of different slots, and one
//! command at a time over it loses the pipelining that makes the sink fast; and in this
//! project's tests its connection stopped answering after a slot migration under load (every
//! command timed out until the run gave up). Routing by hand is a slot table and one pipeline
//! per node.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisResult, ServerErrorKind, Value};

use super::{Refusal, Rows, describe, keep_worst, refuses_the_row, reply_per_command};
use tokio::sync::RwLock;

/// Slots in a Redis Cluster.
const SLOTS: usize = 16384;
/// How many times a command is redirected (MOVED, ASK) before the write fails.
const MAX_REDIRECTIONS: usize = 5;

/// The slot of a key: CRC16 (XMODEM) of the key, or of the part between the first `{` and the
/// next `}` when that part is not empty (a hash tag), modulo 16384.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = memchr::memchr(b'{', key).and_then(|open| {
        let close = memchr::memchr(b'}', &key[open + 1..])?;
        let tag = &key[open + 1..open + 1 + close];
        (!tag.is_empty()).then_some(tag)
    });
    (crc_fast::checksum(crc_fast::CrcAlgorithm::Crc16Xmodem, tagged.unwrap_or(key)) as usize % SLOTS) as u16
}

/// A cluster: its seed nodes, and what it last said about which node owns which slot.
pub struct Cluster {
    /// `redis://[user:password@]` (or `rediss://`): what goes before a node's `host:port`.
    prefix: String,
    seeds: Vec<String>,
    /// Replaced whole when the cluster says something new: a round trip keeps the map it was
    /// grouped by, and notices when it is no longer the current one.
    map: RwLock<Arc<SlotMap>>,
}

#[derive(Default)]
struct SlotMap {
    /// The owner of each slot: an index into `nodes`.
    owners: Vec<usize>,
    nodes: Vec<Node>,
}

impl SlotMap {
    /// The node that owns the slot of `cmd`'s key; `None` when no node does (a stale map).
    fn owner(&self, cmd: &Cmd) -> Option<usize> {
        self.owners.get(slot(key_of(cmd)) as usize).copied().filter(|&owner| owner != usize::MAX)
    }
}

#[derive(Clone)]
struct Node {
    /// `host:port`.
    address: String,
    connection: ConnectionManager,
}

/// A round trip's single-key commands, each with the rows it writes, grouped by the node that
/// owns each one's key as they are added (so no command is copied to be grouped), and what is
/// left of them to send: a failed [`Cluster::send`] keeps the commands no node acknowledged,
/// and sending the trip again sends only those.
pub struct Trip {
    /// The slot map the commands are grouped by.
    map: Arc<SlotMap>,
    /// The commands for each node of `map`, by its index.
    groups: Vec<Group>,
    /// Commands to route again: their slot had no owner, or its owner answered `MOVED`.
    strays: Vec<(Cmd, Rows)>,
    /// Commands an `ASK` sent to the node at `host:port`, where they go after `ASKING`.
    asked: Vec<(String, Cmd, Rows)>,
    /// Commands a node refused for good, for a reason that lies with their rows.
    refused: Vec<Refusal>,
    /// The last attempt failed: the next one asks the cluster for its slot map first, so a
    /// replica promoted in place of a dead node gets its commands.
    failed: bool,
}

/// The commands for one node, as one pipeline, and the rows each writes.
struct Group {
    pipe: Pipeline,
    rows: Vec<Rows>,
}

impl Group {
    fn new(capacity: usize) -> Group {
        Group { pipe: reply_per_command(capacity), rows: Vec::with_capacity(capacity) }
    }

    fn add(&mut self, cmd: Cmd, rows: Rows) {
        self.pipe.add_command(cmd);
        self.rows.push(rows);
    }

    fn is_empty(&self) -> bool {
        self.pipe.is_empty()
    }

    /// The commands that are not the `ASKING` before an asked command, with their rows.
    fn commands(&self) -> impl Iterator<Item = (&Cmd, &Rows)> {
        self.pipe.cmd_iter().filter(|cmd| !is_asking(cmd)).zip(&self.rows)
    }
}

impl Trip {
    fn new(map: Arc<SlotMap>, commands: usize) -> Trip {
        let per_node = commands / map.nodes.len().max(1) + 1;
        let groups = (0..map.nodes.len()).map(|_| Group::new(per_node)).collect();
        Trip { map, groups, strays: Vec::new(), asked: Vec::new(), refused: Vec::new(), failed: false }
    }

    /// Adds a single-key command that writes `rows`, to the group of the node that owns its key.
    pub fn add(&mut self, cmd: Cmd, rows: Rows) {
        match self.map.owner(&cmd) {
            Some(owner) => self.groups[owner].add(cmd, rows),
            None => self.strays.push((cmd, rows)),
        }
    }

    /// The commands a node refused for good so far, taken out of the trip.
    pub fn take_refused(&mut self) -> Vec<Refusal> {
        std::mem::take(&mut self.refused)
    }

    fn is_done(&self) -> bool {
        self.groups.iter().all(Group::is_empty) && self.strays.is_empty() && self.asked.is_empty()
    }

    /// Groups the commands by `map` instead: the strays, and every command if the map is new.
    fn regroup(&mut self, map: Arc<SlotMap>) {
        let mut commands = std::mem::take(&mut self.strays);
        if !Arc::ptr_eq(&map, &self.map) {
            // Only after the cluster changed: the commands are copied out of their pipelines.
            for group in self.groups.drain(..) {
                commands.extend(group.commands().map(|(cmd, rows)| (cmd.clone(), rows.clone())));
            }
            let per_node = commands.len() / map.nodes.len().max(1) + 1;
            self.groups = (0..map.nodes.len()).map(|_| Group::new(per_node)).collect();
            self.map = map;
        }
        commands.into_iter().for_each(|(cmd, rows)| self.add(cmd, rows));
    }

    /// The commands an `ASK` redirected, as one pipeline per node, `ASKING` before each.
    fn take_asked(&mut self) -> Vec<(String, Group)> {
        let mut asked: Vec<(String, Group)> = Vec::new();
        for (address, cmd, rows) in std::mem::take(&mut self.asked) {
            let at = asked.iter().position(|(a, _)| *a == address).unwrap_or_else(|| {
                asked.push((address, Group::new(2)));
                asked.len() - 1
            });
            let group = &mut asked[at].1;
            group.pipe.cmd("ASKING").ignore();
            group.add(cmd, rows);
        }
        asked
    }

    /// Takes in the replies of the node at `address` to `group`: what it acknowledged leaves the
    /// trip, what it refused for a reason of the rows' goes to `refused`, what it redirected or
    /// failed goes back into the trip (true if any was `MOVED`), the first failure that is not a
    /// redirection into `failure`.
    fn settle(&mut self, address: &str, group: &Group, replies: Vec<Value>, failure: &mut Option<RedisError>) -> bool {
        let mut moved = false;
        for ((cmd, rows), reply) in group.commands().zip(replies) {
            let Value::ServerError(e) = reply else { continue };
            let e = RedisError::from(e);
            match (e.kind(), e.redirect_node()) {
                (ErrorKind::Server(ServerErrorKind::Moved), _) => {
                    moved = true;
                    self.strays.push((cmd.clone(), rows.clone()));
                }
                (ErrorKind::Server(ServerErrorKind::Ask), Some((to, _))) => {
                    self.asked.push((to.to_string(), cmd.clone(), rows.clone()));
                }
                _ if refuses_the_row(&e) => {
                    self.refused.push(Refusal { rows: rows.clone(), reason: describe(&at_node(address, e)) });
                }
                // Kept for the next attempt: a transient error (`TRYAGAIN`, `CLUSTERDOWN`,
                // `LOADING`) is retried; any other fails the run.
                _ => {
                    keep_worst(failure, at_node(address, e));
                    self.strays.push((cmd.clone(), rows.clone()));
                }
            }
        }
        moved
    }
}

impl Cluster {
    /// Learns the slot map from the first seed (`host:port`) that answers.
    pub async fn connect(prefix: String, seeds: Vec<String>) -> RedisResult<Cluster> {
        let cluster = Cluster { prefix, seeds, map: RwLock::default() };
        cluster.refresh().await?;
        Ok(cluster)
    }

    /// `host:port` of the seeds, for messages.
    pub fn describe(&self) -> String {
        self.seeds.join(",")
    }

    async fn node(&self, address: &str) -> RedisResult<ConnectionManager> {
        if let Some(node) = self.map.read().await.nodes.iter().find(|n| n.address == address) {
            return Ok(node.connection.clone());
        }
        connect_node(&self.prefix, address).await
    }

    /// Asks the known nodes, then the seeds, for `CLUSTER SLOTS` until one answers.
    async fn refresh(&self) -> RedisResult<()> {
        let known: Vec<String> = self.map.read().await.nodes.iter().map(|n| n.address.clone()).collect();
        let mut last_error = None;
        for address in known.iter().chain(&self.seeds) {
            let connection = match self.node(address).await {
                Ok(connection) => connection,
                Err(e) => {
                    last_error = Some(at_node(address, e));
                    continue;
                }
            };
            match redis::cmd("CLUSTER").arg("SLOTS").query_async::<Value>(&mut connection.clone()).await {
                Ok(reply) => return self.install(&reply, address).await,
                Err(e) => last_error = Some(at_node(address, e)),
            }
        }
        Err(last_error.unwrap_or_else(|| RedisError::from((ErrorKind::Client, "no cluster node to ask"))))
    }

    /// Builds the slot map from the `CLUSTER SLOTS` reply of the node at `answering`, reusing
    /// open connections.
    async fn install(&self, reply: &Value, answering: &str) -> RedisResult<()> {
        let Value::Array(ranges) = reply else {
            return Err(RedisError::from((ErrorKind::Client, "unexpected CLUSTER SLOTS reply")));
        };
        let mut owners = vec![usize::MAX; SLOTS];
        let mut addresses: Vec<String> = Vec::new();
        for range in ranges {
            let Value::Array(fields) = range else { continue };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                continue;
            };
            let host = match master.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                Some(Value::Nil) => String::new(),
                _ => continue,
            };
            let Some(Value::Int(port)) = master.get(1) else { continue };
            let Some(address) = node_address(&host, *port, answering) else { continue };
            let index = addresses.iter().position(|a| *a == address).unwrap_or_else(|| {
                addresses.push(address);
                addresses.len() - 1
            });
            if let Some(slots) = owners.get_mut(*start as usize..=(*end as usize).min(SLOTS - 1)) {
                slots.fill(index);
            }
        }
        let mut nodes = Vec::with_capacity(addresses.len());
        for address in addresses {
            let connection = self.node(&address).await.map_err(|e| at_node(&address, e))?;
            nodes.push(Node { address, connection });
        }
        *self.map.write().await = Arc::new(SlotMap { owners, nodes });
        Ok(())
    }

    /// How many nodes own slots, as the cluster last said.
    pub async fn nodes(&self) -> usize {
        self.map.read().await.nodes.len().max(1)
    }

    /// An empty round trip, with room for about `commands` commands, grouped by the current
    /// slot map.
    pub async fn trip(&self, commands: usize) -> Trip {
        Trip::new(self.map.read().await.clone(), commands)
    }

    /// Sends what is left of `trip`, each node its group as one pipeline, all at once, and
    /// follows redirections: `MOVED` refreshes the slot map and sends those commands again to
    /// their new owner, `ASK` sends them to the node named after `ASKING`. What a node
    /// acknowledged leaves the trip, so after an error (naming the node) sending it again
    /// resends only the rest, after asking the cluster for its slot map. Once every node's
    /// replies are in, fails with the worst error that is not a redirection.
    pub async fn send(&self, trip: &mut Trip) -> RedisResult<()> {
        if std::mem::take(&mut trip.failed) {
            // At worst the old map stays: sending to a node that is down fails again.
            let _ = self.refresh().await;
        }
        for _ in 0..=MAX_REDIRECTIONS {
            let current = self.map.read().await.clone();
            if !trip.strays.is_empty() || !Arc::ptr_eq(&current, &trip.map) {
                // A slot nobody owns means the map is stale: ask the cluster again first.
                if trip.strays.iter().any(|(cmd, _)| current.owner(cmd).is_none()) {
                    self.refresh().await?;
                    trip.regroup(self.map.read().await.clone());
                } else {
                    trip.regroup(current);
                }
            }
            if trip.is_done() {
                return Ok(());
            }
            let map = trip.map.clone();
            let groups = std::mem::take(&mut trip.groups);
            let sends = groups.into_iter().enumerate().map(|(owner, group)| {
                let node = &map.nodes[owner];
                async move {
                    let replies = match group.is_empty() {
                        true => Ok(Vec::new()),
                        false => send_pipeline(node.connection.clone(), &group.pipe).await,
                    };
                    (node.address.clone(), group, replies.map_err(|e| at_node(&node.address, e)))
                }
            });
            let asks = trip.take_asked().into_iter().map(|(address, group)| async move {
                let replies = match self.node(&address).await {
                    Ok(connection) => send_pipeline(connection, &group.pipe).await,
                    Err(e) => Err(e),
                }
                .map_err(|e| at_node(&address, e));
                (address, group, replies)
            });
            let (sent, asked_back) = tokio::join!(futures::future::join_all(sends), futures::future::join_all(asks));
            trip.groups = (0..map.nodes.len()).map(|_| Group::new(0)).collect();
            let (mut moved, mut failure) = (false, None);
            for (owner, (address, group, replies)) in sent.into_iter().enumerate() {
                match replies {
                    Ok(replies) => moved |= trip.settle(&address, &group, replies, &mut failure),
                    // None of it was acknowledged: it stays for the next attempt.
                    Err(e) => {
                        keep_worst(&mut failure, e);
                        trip.groups[owner] = group;
                    }
                }
            }
            for (address, group, replies) in asked_back {
                match replies {
                    Ok(replies) => moved |= trip.settle(&address, &group, replies, &mut failure),
                    Err(e) => {
                        keep_worst(&mut failure, e);
                        let commands = group.commands().map(|(cmd, rows)| (address.clone(), cmd.clone(), rows.clone()));
                        trip.asked.extend(commands);
                    }
                }
            }
            if let Some(e) = failure {
                trip.failed = true;
                return Err(e);
            }
            if moved {
                self.refresh().await?;
            }
        }
        // Retried like a node that is down: the cluster may still be agreeing on its slots.
        trip.failed = true;
        Err(RedisError::from((
            ErrorKind::ClusterConnectionNotFound,
            "too many redirections",
            format!("still redirected after {MAX_REDIRECTIONS}"),
        )))
    }

    /// Runs one single-key command on the node that owns its key, following redirections (`ASK`
    /// to the importing node of a slot being moved): what `runner lookup` and dead letters need.
    pub async fn query(&self, cmd: &Cmd) -> RedisResult<Value> {
        for _ in 0..=MAX_REDIRECTIONS {
            let (address, connection) = {
                let map = self.map.read().await.clone();
                match map.owner(cmd) {
                    Some(owner) => (map.nodes[owner].address.clone(), map.nodes[owner].connection.clone()),
                    None => {
                        self.refresh().await?;
                        continue;
                    }
                }
            };
            match cmd.query_async::<Value>(&mut connection.clone()).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::Ask) => {
                    let Some((to, _)) = e.redirect_node() else { return Err(at_node(&address, e)) };
                    let mut pipe = redis::pipe();
                    pipe.cmd("ASKING").ignore().add_command(cmd.clone());
                    let mut connection = self.node(to).await.map_err(|e| at_node(to, e))?;
                    let (reply,): (Value,) = pipe.query_async(&mut connection).await.map_err(|e| at_node(to, e))?;
                    return Ok(reply);
                }
                Err(e) if e.redirect_node().is_some() => self.refresh().await?,
                result => return result.map_err(|e| at_node(&address, e)),
            }
        }
        Err(RedisError::from((ErrorKind::Client, "too many redirections")))
    }
}

/// The `host:port` of a node as `CLUSTER SLOTS` names it: an empty, null or wildcard host
/// means the answering node's host, `?` a node whose address the cluster does not know (none).
/// IPv6 addresses are bracketed.
fn node_address(host: &str, port: i64, answering: &str) -> Option<String> {
    let host = match host {
        "?" => return None,
        "" | "0.0.0.0" | "::" => answering.rsplit_once(':').map_or(answering, |(host, _)| host),
        host => host,
    };
    match host.contains(':') && !host.starts_with('[') {
        true => Some(format!("[{host}]:{port}")),
        false => Some(format!("{host}:{port}")),
    }
}

/// Sends one node its pipeline: a reply per command that is not ignored, errors included.
async fn send_pipeline(mut connection: ConnectionManager, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
    pipe.query_async(&mut connection).await
}

/// Whether `cmd` is the `ASKING` put before a command sent where an `ASK` said.
fn is_asking(cmd: &Cmd) -> bool {
    matches!(cmd.args_iter().next(), Some(redis::Arg::Simple(b"ASKING")))
}

/// The key of a single-key command: its first argument after the name (after the script and
/// the key count, for `EVAL`).
fn key_of(cmd: &Cmd) -> &[u8] {
    let mut args = cmd.args_iter();
    let skip = match args.next() {
        Some(redis::Arg::Simple(b"EVAL" | b"EVALSHA")) => 2,
        _ => 0,
    };
    match args.nth(skip) {
        Some(redis::Arg::Simple(key)) => key,
        _ => b"",
    }
}

/// An error that names the node it came from; as transient as the error it wraps (a transient
/// one keeps being retried, the next attempt asking the cluster for its slot map first).
fn at_node(address: &str, e: RedisError) -> RedisError {
    if e.detail().is_some_and(|d| d.starts_with("node ")) {
        return e;
    }
    let kind = if super::transient(&e) { ErrorKind::ClusterConnectionNotFound } else { e.kind() };
    RedisError::from((kind, "cluster node", format!("node {address}: {e}")))
}

async fn connect_node(prefix: &str, address: &str) -> RedisResult<ConnectionManager> {
    let client = redis::Client::open(format!("{prefix}{address}"))?;
    ConnectionManager::new_with_config(client, super::manager_config(1)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's replies to its pipeline: what it wrote leaves the trip, what it failed stays
    /// (to be sent again), what it redirected goes where it said, and what it refused for a
    /// reason of the row's is handed back with the rows it writes.
    #[test]
    fn replies_leave_in_the_trip_what_was_not_written() {
        let reply = |text: &str| redis::parse_redis_value(text.as_bytes()).unwrap();
        let keys = |cmds: &[(Cmd, Rows)]| cmds.iter().map(|(cmd, _)| key_of(cmd).to_vec()).collect::<Vec<_>>();
        let mut trip = Trip::new(Arc::default(), 4);
        let mut group = Group::new(4);
        for (row, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
            group.add(Cmd::set(key, "v"), row as u32..row as u32 + 1);
        }
        let replies = vec![
            reply("+OK\r\n"),
            reply("-MOVED 3999 10.0.0.2:7001\r\n"),
            reply("-ASK 3999 10.0.0.3:7002\r\n"),
            reply("-CLUSTERDOWN The cluster is down\r\n"),
        ];
        let mut failure = None;
        assert!(trip.settle("10.0.0.1:7000", &group, replies, &mut failure), "a MOVED reply");
        assert_eq!(keys(&trip.strays), [b"b".to_vec(), b"d".to_vec()]);
        assert_eq!(trip.strays.iter().map(|(_, rows)| rows.clone()).collect::<Vec<_>>(), [1..2, 3..4]);
        let failure = failure.expect("CLUSTERDOWN fails the attempt");
        assert!(super::super::transient(&failure), "and is retried: {failure}");
        assert!(describe(&failure).starts_with("node 10.0.0.1:7000: "), "{failure}");

        // The ASK-ed command goes to the node named, after an ASKING that has no reply of its own.
        let mut asked = trip.take_asked();
        assert_eq!(asked.len(), 1);
        let (address, group) = asked.remove(0);
        assert_eq!(address, "10.0.0.3:7002");
        assert_eq!(group.pipe.cmd_iter().map(is_asking).collect::<Vec<_>>(), [true, false]);
        // That node refuses it: a key of another type is the row's fault, not the node's.
        let mut failure = None;
        assert!(!trip.settle(&address, &group, vec![reply("-WRONGTYPE Operation against a key\r\n")], &mut failure));
        assert!(failure.is_none(), "a refused row does not fail the attempt");
        let refused = trip.take_refused();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].rows, 2..3);
        assert!(refused[0].reason.starts_with("node 10.0.0.3:7002: ") && refused[0].reason.contains("WRONGTYPE"));
        assert_eq!(keys(&trip.strays), [b"b".to_vec(), b"d".to_vec()], "nor is it sent again");

        // A node out of memory fails the attempt, and outranks a node that is down for now.
        let mut group = Group::new(1);
        group.add(Cmd::set("e", "v"), 4..5);
        let mut failure = None;
        trip.settle("10.0.0.1:7000", &group, vec![reply("-OOM command not allowed\r\n")], &mut failure);
        let mut worst = Some(at_node("10.0.0.1:7000", RedisError::from(std::io::Error::other("refused"))));
        keep_worst(&mut worst, failure.expect("OOM fails the attempt"));
        assert!(worst.is_some_and(|e| !super::super::transient(&e) && e.to_string().contains("OOM")));
    }

    #[test]
    fn node_addresses_follow_cluster_slots_conventions() {
        assert_eq!(node_address("10.0.0.2", 7001, "10.0.0.1:7000").as_deref(), Some("10.0.0.2:7001"));
        assert_eq!(node_address("redis-1.redis", 6379, "seed:6379").as_deref(), Some("redis-1.redis:6379"));
        assert_eq!(node_address("", 7001, "10.0.0.1:7000").as_deref(), Some("10.0.0.1:7001"));
        assert_eq!(node_address("0.0.0.0", 7001, "[::1]:7000").as_deref(), Some("[::1]:7001"));
        assert_eq!(node_address("::1", 7001, "x:1").as_deref(), Some("[::1]:7001"));
        assert_eq!(node_address("?", 7001, "10.0.0.1:7000"), None);
    }

    #[test]
    fn slots_are_crc16_of_the_key_or_its_hash_tag() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"123456789"), 0x31C3); // the CRC16 check value, below 16384
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        // An empty tag does not count: the whole key is hashed.
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        // tests/cluster.rs compares with the cluster's own CLUSTER KEYSLOT.
    }
}
