//! `kind = "redis"` sink: writes each row under its key, as the original flow did (`SET key
//! label`), or as a hash of several columns (`HSET key field value ...`).
//!
//! ```toml
//! [sink]
//! kind = "redis"
//! [sink.config]
//! url = "${REDIS_URL:-redis://127.0.0.1:6379/0}"  # or redis+cluster://h1:7000,h2:7001; rediss for TLS
//! key = "key"                  # the column holding each row's key (default "key")
//! value = "label"              # SET key <value>; or: fields = ["label", "p_setosa"] for HSET
//! ttl_seconds = 86400          # optional: keys expire (at least 1)
//! pipeline = 100               # commands per round trip (default 100)
//! in_flight = 64               # round trips outstanding at once (default 64)
//! retry_seconds = 30           # keep retrying failed writes this long (default 30)
//! ```
//!
//! Writes are idempotent (a rerun sets the same keys to the same values), so a failed write is
//! simply sent again: after a dropped connection, a timeout or a restarting server, with backoff,
//! until `retry_seconds` have passed. The connection is re-established in the background.
//!
//! Round trips overlap: while Redis works through the ones in flight, the sink builds the next,
//! across batches; `flush` waits for the last acknowledgement. Plain values without expiry go
//! as one `MSET` per round trip rather than a `SET` per row: the same keys and values, for a
//! fraction of Redis's work. Round trips are small and many by default: Redis spends less per
//! key on 100-key `MSET`s than on 1000-key ones (docs/performance.md), and 64 in flight keep
//! it busy.
//!
//! Every command's reply is read, so each row's fate is known: a row is written when Redis
//! acknowledged its commands. The step's error policy applies to the rows themselves: a null
//! key or value, or a row whose every field is null (refused before anything is sent), and a
//! command Redis refuses for a reason of the row's (a key holding another type, `WRONGTYPE`; a
//! key an ACL denies): that row alone, with Redis's reason, while the rest of its round trip is
//! written (an `MSET` refused is sent again as one `SET` per row, to find the row). With
//! `fields` and `ttl_seconds`, each row is one script that sets the expiry only once the `HSET`
//! succeeded. A server that stays unreachable past `retry_seconds`, or that refuses every row
//! (out of memory, a wrong password, an ACL that denies the command), fails the run whatever the
//! policy, saying how many rows it did not acknowledge: they are neither written nor rejected,
//! and a rerun writes them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use redis::Cmd;
use serde::Deserialize;

use super::{Kind, Opened, PlanContext};
use crate::batch::{Batch, Column, ColumnType, TextStyle, Values};
use crate::format::PythonFloats;
use crate::redis_client::{Connection, Refusal, RoundTrip, Rows, connect, give_up, redacted, target, with_retries};
use crate::spec::Role;
use crate::step::{Acks, Progress, RefusedRow, RowError, Sink, StepContext, row_json};

/// The `config` table of a `redis` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// `url = "redis://host:6379/0"`, or a cluster, `redis+cluster://host1:7000,host2:7001`;
    /// `rediss` for TLS; `user:password@` as for any URL (see `redis_client`).
    pub url: String,
    /// `key = "key"`: the column holding each row's key.
    #[serde(default = "default_key")]
    pub key: String,
    /// `value = "label"`: write `SET key value` from this column.
    pub value: Option<String>,
    /// `fields = ["label", "p_setosa"]`: write `HSET key field value ...` from these columns.
    #[serde(default)]
    pub fields: Vec<String>,
    /// `ttl_seconds = 86400`: expire each key after this long, at least 1 (default: keys do not
    /// expire).
    pub ttl_seconds: Option<u64>,
    /// `pipeline = 100`: commands sent in one round trip.
    #[serde(default = "default_pipeline")]
    pub pipeline: usize,
    /// `in_flight = 64`: round trips outstanding at once on the connection.
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
    /// `retry_seconds = 30`: how long to keep retrying a write (or the first connection)
    /// through transient failures before failing the run.
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: u64,
}

fn default_key() -> String {
    "key".into()
}

fn default_pipeline() -> usize {
    100
}

fn default_in_flight() -> usize {
    64
}

fn default_retry_seconds() -> u64 {
    30
}

pub struct RedisSink {
    config: RedisSinkConfig,
    connection: Connection,
    /// The URL without its password.
    shown: String,
    /// Round trips sent and not yet settled, across batches: while Redis works on them the sink
    /// builds the next ones. At most `in_flight`; `flush` waits for all. Each a task of its own,
    /// so it goes out at once rather than when the sink next waits.
    sending: FuturesUnordered<tokio::task::JoinHandle<anyhow::Result<Settled>>>,
    /// Rows handed to Redis, and rows it acknowledged: what a failure reports as not written.
    sent: u64,
    acknowledged: u64,
    /// Where round trips and retries are counted (the run's metrics).
    progress: Arc<Progress>,
}

/// A round trip Redis answered in full: its rows of `batch`, and those it refused.
struct Settled {
    batch: Arc<Batch>,
    rows: Rows,
    refused: Vec<Refusal>,
}

impl Settled {
    /// The trip's rows as acknowledged and refused ones; a row refused by any of its commands
    /// (an `HSET` or its `EXPIRE`) is refused, once, with the first reason.
    fn acks(self) -> Acks {
        let mut refused: BTreeMap<u32, String> = BTreeMap::new();
        for refusal in self.refused {
            for row in refusal.rows {
                refused.entry(row).or_insert_with(|| refusal.reason.clone());
            }
        }
        let rows = u64::from(self.rows.end - self.rows.start) - refused.len() as u64;
        let refused = refused
            .into_iter()
            .map(|(row, reason)| RefusedRow { row: row_json(&self.batch, row as usize), reason })
            .collect();
        Acks { rows, refused }
    }
}

impl RedisSinkConfig {
    /// What serde cannot check: exactly one of `value` and `fields`, positive sizes, a URL.
    pub fn check(&self) -> Result<(), String> {
        match (&self.value, self.fields.is_empty()) {
            (Some(_), false) => return Err("set either `value` (SET) or `fields` (HSET), not both".into()),
            (None, true) => return Err("set `value` (SET key value) or `fields` (HSET key field value ...)".into()),
            _ => {}
        }
        if self.pipeline == 0 || self.in_flight == 0 {
            return Err("`pipeline` and `in_flight` must be at least 1".into());
        }
        if self.ttl_seconds == Some(0) {
            return Err("`ttl_seconds` must be at least 1: Redis deletes a key whose expiry is 0 at once (leave it \
                        out for keys that do not expire)"
                .into());
        }
        target(&self.url)?;
        Ok(())
    }
}

/// `kind = "redis"` in a sink.
#[async_trait]
impl Kind for RedisSink {
    const ROLE: Role = Role::Sink;
    const NAME: &'static str = "redis";
    type Config = RedisSinkConfig;

    fn check(config: &RedisSinkConfig, _plan: &PlanContext) -> Result<(), String> {
        config.check()
    }

    async fn open(config: &RedisSinkConfig, context: &StepContext) -> anyhow::Result<Opened> {
        Ok(Opened::Sink(Box::new(RedisSink::open(config.clone(), context.progress.clone()).await?)))
    }

    /// The key column, and the value column or the fields.
    fn reads(config: &RedisSinkConfig) -> Vec<String> {
        std::iter::once(&config.key).chain(config.value.iter()).chain(&config.fields).cloned().collect()
    }
}

impl RedisSink {
    pub async fn open(config: RedisSinkConfig, progress: Arc<Progress>) -> anyhow::Result<RedisSink> {
        config.check().map_err(anyhow::Error::msg)?;
        let connection = connect(&config.url, config.retry_seconds).await?;
        Ok(RedisSink {
            shown: redacted(&config.url),
            config,
            connection,
            progress,
            sending: FuturesUnordered::new(),
            sent: 0,
            acknowledged: 0,
        })
    }

    /// What a settled round trip (`Ok` of a joined task) leaves: its acknowledged rows counted,
    /// its refused ones reported. A round trip that failed for good fails the run, saying how
    /// many rows Redis did not acknowledge.
    fn take(&mut self, joined: Result<anyhow::Result<Settled>, tokio::task::JoinError>) -> anyhow::Result<Acks> {
        match joined.context("a Redis write task failed")? {
            Ok(settled) => {
                let acks = settled.acks();
                self.acknowledged += acks.rows + acks.refused.len() as u64;
                Ok(acks)
            }
            Err(e) => Err(e.context(format!(
                "{} of the {} rows sent were not acknowledged, so may not be written (a rerun writes them: the \
                 writes are idempotent)",
                self.sent - self.acknowledged,
                self.sent
            ))),
        }
    }

    /// Waits for the next round trip in flight to settle.
    async fn next_settled(&mut self) -> anyhow::Result<Acks> {
        match self.sending.next().await {
            Some(joined) => self.take(joined),
            None => Ok(Acks::default()),
        }
    }

    /// The round trips that have settled already, without waiting.
    fn settled_now(&mut self) -> anyhow::Result<Acks> {
        let mut acks = Acks::default();
        while let Some(Some(joined)) = self.sending.next().now_or_never() {
            acks.add(self.take(joined)?);
        }
        Ok(acks)
    }

    /// One round trip's commands for `rows` of the batch, added to `trip`, each with the rows it
    /// writes: to one server without expiry, a single `MSET` for plain values (one command
    /// instead of a hundred: far less work for Redis, same result); else (and in a cluster,
    /// which refuses a command whose keys are in different slots) one `SET`, `SET ... EX` or
    /// `HSET` (+ `EXPIRE`) per row.
    fn add_rows(
        &self,
        mut trip: RoundTrip,
        keys: &Values,
        values: &[(&str, &Column)],
        rows: std::ops::Range<usize>,
        floats: &mut PythonFloats,
    ) -> anyhow::Result<RoundTrip> {
        let mut text = String::new();
        let key = |row: usize| keys.text(row).unwrap_or_default();
        let null = |row: usize, name: &str| {
            let message = format!("row {row} of the batch: `{name}` is null; nothing to SET at key {}", key(row));
            anyhow::Error::from(RowError { row, message })
        };
        let tag = |row: usize| row as u32..row as u32 + 1;
        if let (Some(value), None, RoundTrip::Node(_)) = (&self.config.value, self.config.ttl_seconds, &trip) {
            let column = values[0].1;
            let mut mset = Cmd::with_capacity(1 + 2 * rows.len(), 64 * rows.len());
            mset.arg("MSET");
            for row in rows.clone() {
                if column.is_null(row) {
                    return Err(null(row, value));
                }
                text.clear();
                column.values.write_text(row, TextStyle::Plain, floats, &mut text);
                mset.arg(key(row)).arg(&text);
            }
            trip.add(mset, rows.start as u32..rows.end as u32);
            return Ok(trip);
        }
        for row in rows {
            let key = key(row);
            if let Some(value) = &self.config.value {
                let column = values[0].1;
                if column.is_null(row) {
                    return Err(null(row, value));
                }
                text.clear();
                column.values.write_text(row, TextStyle::Plain, floats, &mut text);
                let cmd = match self.config.ttl_seconds {
                    Some(ttl) => Cmd::set_ex(key, &text, ttl),
                    // Sized at once: a command per row is the cluster's hot path.
                    None => set_command(key, &text),
                };
                trip.add(cmd, tag(row));
            } else {
                let mut pairs = Vec::with_capacity(values.len());
                for (field, column) in values {
                    if !column.is_null(row) {
                        let mut text = String::new();
                        column.values.write_text(row, TextStyle::Plain, floats, &mut text);
                        pairs.push((*field, text));
                    }
                }
                if pairs.is_empty() {
                    let message = format!("row {row} of the batch: every field is null; nothing to HSET at key {key}");
                    return Err(RowError { row, message }.into());
                }
                let cmd = match self.config.ttl_seconds {
                    // One script, so that a key Redis refuses to HSET (another type's) is not
                    // given an expiry either: an `EXPIRE` after the `HSET` would delete someone
                    // else's key.
                    Some(ttl) => {
                        let mut cmd = Cmd::new();
                        cmd.arg("EVAL").arg(HSET_EXPIRE).arg(1).arg(key).arg(ttl);
                        pairs.iter().for_each(|(field, text)| {
                            cmd.arg(*field).arg(text);
                        });
                        cmd
                    }
                    None => Cmd::hset_multiple(key, &pairs),
                };
                trip.add(cmd, tag(row));
            }
        }
        Ok(trip)
    }
}

/// `HSET` the fields, then `EXPIRE` the key, unless the `HSET` fails: `EVAL HSET_EXPIRE 1 key
/// ttl field value ...`.
const HSET_EXPIRE: &str = "redis.call('HSET', KEYS[1], unpack(ARGV, 2)) return redis.call('EXPIRE', KEYS[1], ARGV[1])";

/// `SET key value`, its buffers allocated once.
fn set_command(key: &str, value: &str) -> Cmd {
    let mut cmd = Cmd::with_capacity(3, 3 + key.len() + value.len());
    cmd.arg("SET").arg(key).arg(value);
    cmd
}

#[async_trait]
impl Sink for RedisSink {
    /// Builds the batch's round trips (a row refused here, a null key or value, leaves nothing
    /// of the batch sent) and sends them, waiting while `in_flight` are outstanding; returns
    /// what has settled meanwhile.
    async fn write(&mut self, batch: Batch) -> anyhow::Result<Acks> {
        let column = |name: &str| {
            batch.column(name).with_context(|| {
                let have: Vec<&str> = batch.columns().iter().map(|c| c.name.as_str()).collect();
                format!("no column `{name}` (the batch has: {})", have.join(", "))
            })
        };
        let key_column = column(&self.config.key)?;
        let keys = &key_column.values;
        if keys.column_type() != ColumnType::String {
            bail!("the key column `{}` holds {}, not strings", self.config.key, key_column.values.column_type());
        };
        if let Some(row) = (0..batch.rows()).find(|&row| key_column.is_null(row)) {
            let message = format!("row {row} of the batch has no key (`{}` is null)", self.config.key);
            return Err(RowError { row, message }.into());
        }
        let names: Vec<&str> = match &self.config.value {
            Some(value) => vec![value.as_str()],
            None => self.config.fields.iter().map(String::as_str).collect(),
        };
        let values: Vec<(&str, &Column)> =
            names.iter().map(|&n| column(n).map(|c| (n, c))).collect::<anyhow::Result<_>>()?;

        let mut floats = PythonFloats::default();
        // A cluster's round trip goes to every node at once: `pipeline` commands for each.
        let per_trip = self.config.pipeline * self.connection.nodes().await;
        let mut trips = Vec::new();
        for start in (0..batch.rows()).step_by(per_trip) {
            let rows = start..(start + per_trip).min(batch.rows());
            let trip = self.connection.round_trip(rows.len()).await;
            trips.push((rows.start as u32..rows.end as u32, self.add_rows(trip, keys, &values, rows, &mut floats)?));
        }
        let batch = Arc::new(batch);
        let deadline = Duration::from_secs(self.config.retry_seconds);
        let mut acks = Acks::default();
        for (rows, trip) in trips {
            // Keep at most `in_flight` round trips outstanding.
            while self.sending.len() >= self.config.in_flight {
                acks.add(self.next_settled().await?);
            }
            let (connection, what) = (self.connection.clone(), format!("writing to {}", self.shown));
            let (batch, progress) = (batch.clone(), self.progress.clone());
            self.sent += u64::from(rows.end - rows.start);
            self.sending.push(tokio::spawn(async move {
                // What is left to send, for the next attempt after a failure.
                let trip = &tokio::sync::Mutex::new(trip);
                let mut attempts = 0;
                with_retries(deadline, &what, || {
                    attempts += 1;
                    let mut connection = connection.clone();
                    async move { connection.send(&mut *trip.lock().await).await }
                })
                .await
                .map_err(|e| give_up(&what, &e, deadline))?;
                progress.round_trip(attempts);
                let refused = trip.lock().await.take_refused();
                Ok(Settled { batch, rows, refused })
            }));
        }
        acks.add(self.settled_now()?);
        Ok(acks)
    }

    /// Waits until Redis answered every round trip.
    async fn flush(&mut self) -> anyhow::Result<Acks> {
        let mut acks = Acks::default();
        while !self.sending.is_empty() {
            acks.add(self.next_settled().await?);
        }
        Ok(acks)
    }

    /// Every row is written when Redis acknowledges it.
    fn durable_before_commit(&self) -> bool {
        true
    }

    /// Nothing left: every row was written when Redis acknowledged it.
    async fn commit(&mut self) -> anyhow::Result<Acks> {
        Ok(Acks::default())
    }

    /// Gives the round trips in flight a moment to settle (already sent, they usually have
    /// their replies within milliseconds), then stops the rest: their rows are not counted as
    /// written, though Redis may hold some of them.
    async fn abort(&mut self) -> Acks {
        let mut acks = Acks::default();
        let grace = tokio::time::sleep(ABORT_GRACE);
        tokio::pin!(grace);
        while !self.sending.is_empty() {
            tokio::select! {
                Some(joined) = self.sending.next() => {
                    if let Ok(settled) = self.take(joined) {
                        acks.rows += settled.rows;
                    }
                }
                _ = &mut grace => break,
            }
        }
        self.sending.iter().for_each(|task| task.abort());
        acks
    }
}

/// How long an aborted sink waits for the round trips it already sent.
const ABORT_GRACE: Duration = Duration::from_secs(2);

impl Drop for RedisSink {
    /// A sink dropped while round trips are in flight (a task that panicked) stops them.
    fn drop(&mut self) {
        self.sending.iter().for_each(|task| task.abort());
    }
}
