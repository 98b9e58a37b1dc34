//! A Redis Cluster as the runner writes to it: every key hashed to its slot (CRC16 of the key,
//! or of its `{hash tag}`, modulo 16384), the commands of a round trip grouped by the node that
//! owns their slots, and each node sent its group as one pipeline, all nodes at once. A `MOVED`
//! reply (the slot has a new owner) refreshes the slot map and sends exactly those commands
//! again; an `ASK` reply (the slot is moving) sends them to the node named, after `ASKING`.
//!
//! Why not redis-rs's cluster client: its pipelines refuse keys of different slots, and one
//! command at a time over it loses the pipelining that makes the sink fast; and in this
//! project's tests its connection stopped answering after a slot migration under load (every
//! command timed out until the run gave up). Routing by hand is a slot table and one pipeline
//! per node.

use std::collections::BTreeMap;

use redis::aio::ConnectionManager;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisResult, ServerErrorKind, Value};
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
    map: RwLock<SlotMap>,
}

#[derive(Default)]
struct SlotMap {
    /// The owner of each slot: an index into `nodes`.
    owners: Vec<usize>,
    nodes: Vec<Node>,
}

#[derive(Clone)]
struct Node {
    /// `host:port`.
    address: String,
    connection: ConnectionManager,
}

/// A command and the slot of its key.
struct Routed<'a> {
    slot: u16,
    cmd: &'a Cmd,
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
        *self.map.write().await = SlotMap { owners, nodes };
        Ok(())
    }

    /// How many nodes own slots, as the cluster last said.
    pub async fn nodes(&self) -> usize {
        self.map.read().await.nodes.len().max(1)
    }

    /// Sends `pipe`'s single-key commands, each to the node that owns its key's slot: one
    /// pipeline per node, all at once, following redirections. Fails on the first error that is
    /// not a redirection, naming the node.
    pub async fn send(&self, pipe: &Pipeline) -> RedisResult<()> {
        let mut pending: Vec<Routed> = pipe.cmd_iter().map(|cmd| Routed { slot: slot(key_of(cmd)), cmd }).collect();
        let mut asked: Vec<(String, Routed)> = Vec::new();
        for _ in 0..=MAX_REDIRECTIONS {
            if pending.is_empty() && asked.is_empty() {
                return Ok(());
            }
            // Group by owner; a slot nobody owns (the map is stale) asks for a refresh first.
            let groups = {
                let map = self.map.read().await;
                if pending.iter().any(|r| map.owners.get(r.slot as usize).is_none_or(|&o| o == usize::MAX)) {
                    drop(map);
                    self.refresh().await?;
                    continue;
                }
                let mut groups: BTreeMap<usize, Vec<Routed>> = BTreeMap::new();
                for routed in pending.drain(..) {
                    groups.entry(map.owners[routed.slot as usize]).or_default().push(routed);
                }
                groups.into_iter().map(|(owner, cmds)| (map.nodes[owner].clone(), cmds)).collect::<Vec<_>>()
            };
            let asking: Vec<(String, Routed)> = std::mem::take(&mut asked);
            let sends = groups.into_iter().map(|(node, cmds)| async move {
                let replies =
                    send_pipeline(node.connection.clone(), &cmds, false).await.map_err(|e| at_node(&node.address, e));
                (node.address, cmds, replies)
            });
            let asks = asking.into_iter().map(|(address, routed)| async move {
                let cmds = vec![routed];
                let replies = match self.node(&address).await {
                    Ok(connection) => send_pipeline(connection, &cmds, true).await,
                    Err(e) => Err(e),
                }
                .map_err(|e| at_node(&address, e));
                (address, cmds, replies)
            });
            let (sent, asked_back) = tokio::join!(futures::future::join_all(sends), futures::future::join_all(asks));
            let mut moved = false;
            for (address, cmds, replies) in sent.into_iter().chain(asked_back) {
                let replies = replies?;
                for (routed, reply) in cmds.into_iter().zip(replies) {
                    let Err(e) = reply else { continue };
                    match e.kind() {
                        ErrorKind::Server(ServerErrorKind::Moved) => {
                            moved = true;
                            pending.push(routed);
                        }
                        ErrorKind::Server(ServerErrorKind::Ask) => match e.redirect_node() {
                            Some((to, _)) => asked.push((to.to_string(), routed)),
                            None => return Err(at_node(&address, e)),
                        },
                        _ => return Err(at_node(&address, e)),
                    }
                }
            }
            if moved {
                self.refresh().await?;
            }
        }
        Err(RedisError::from((
            ErrorKind::Client,
            "too many redirections",
            format!("still redirected after {MAX_REDIRECTIONS}"),
        )))
    }

    /// Runs one single-key command on the node that owns its key, following redirections (`ASK`
    /// to the importing node of a slot being moved): what `runner lookup` and dead letters need.
    pub async fn query(&self, cmd: &Cmd) -> RedisResult<Value> {
        let key_slot = slot(key_of(cmd));
        for _ in 0..=MAX_REDIRECTIONS {
            let (address, connection) = {
                let map = self.map.read().await;
                match map.owners.get(key_slot as usize) {
                    Some(&owner) if owner != usize::MAX => {
                        (map.nodes[owner].address.clone(), map.nodes[owner].connection.clone())
                    }
                    _ => {
                        drop(map);
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

/// One pipeline of commands to one node; `asking` puts `ASKING` before each. One reply per
/// command: its own error, if it failed.
async fn send_pipeline(
    mut connection: ConnectionManager,
    cmds: &[Routed<'_>],
    asking: bool,
) -> RedisResult<Vec<RedisResult<()>>> {
    let mut pipe = redis::Pipeline::with_capacity(cmds.len() * if asking { 2 } else { 1 });
    pipe.ignore_errors();
    for routed in cmds {
        if asking {
            pipe.cmd("ASKING").ignore();
        }
        pipe.add_command(routed.cmd.clone());
    }
    let replies: Vec<Value> = pipe.query_async(&mut connection).await?;
    Ok(replies
        .into_iter()
        .map(|reply| match reply {
            Value::ServerError(e) => Err(RedisError::from(e)),
            _ => Ok(()),
        })
        .collect())
}

/// The key of a single-key command: its first argument after the name.
fn key_of(cmd: &Cmd) -> &[u8] {
    match cmd.args_iter().nth(1) {
        Some(redis::Arg::Simple(key)) => key,
        _ => b"",
    }
}

/// An error that names the node it came from; as transient as the error it wraps (a transient
/// one keeps being retried, and makes the next attempt start from the seeds again).
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
    use super::{node_address, slot};

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
