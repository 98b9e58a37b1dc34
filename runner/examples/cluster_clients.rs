//! Writes the same SETs into a Redis Cluster three ways and prints each one's rate: redis-rs's
//! own cluster client a command at a time (its connections pipeline whatever is in flight), the
//! same client given a pipeline (which it refuses when the keys' slots differ), and the
//! Redis sink's routing (`runner::redis_client`: round trips of `PIPELINE` commands per node,
//! split by the node that owns each slot, `IN_FLIGHT` at once). The keys are SHA-256 hex strings,
//! like the row keys; every node is emptied before each write; the ways take turns.
//!
//! ```text
//! cargo run --release -p runner --example cluster_clients -- ROWS RUNS host:port...
//! ```
//! `bench/end_to_end.py --cluster` runs it on its three-node cluster.

use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use redis::RedisResult;
use sha2::{Digest, Sha256};

/// The sink's defaults: commands per node per round trip, and round trips at once.
const PIPELINE: usize = 100;
const IN_FLIGHT: usize = 64;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(rows), Some(runs), nodes) = (args.first(), args.get(1), args.get(2..).unwrap_or_default()) else {
        anyhow::bail!("usage: cluster_clients ROWS RUNS host:port...");
    };
    anyhow::ensure!(!nodes.is_empty(), "usage: cluster_clients ROWS RUNS host:port...");
    let (rows, runs): (usize, usize) = (rows.parse()?, runs.parse()?);
    let pairs: Vec<(String, &str)> = (0..rows)
        .map(|i| {
            let key: String = Sha256::digest(i.to_string()).iter().map(|b| format!("{b:02x}")).collect();
            (key, ["setosa", "versicolor", "virginica"][i % 3])
        })
        .collect();
    tokio::runtime::Runtime::new()?.block_on(async {
        let urls: Vec<String> = nodes.iter().map(|node| format!("redis://{node}")).collect();
        let client = redis::cluster::ClusterClient::new(urls.clone())?;
        let theirs = client.get_async_connection().await?;
        let ours = runner::redis_client::connect(&format!("redis+cluster://{}", nodes.join(",")), 10).await?;
        let empty = || async {
            for url in &urls {
                let mut node = redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?;
                redis::cmd("FLUSHALL").query_async::<()>(&mut node).await?;
            }
            RedisResult::Ok(())
        };

        empty().await?;
        let mut pipe = redis::pipe();
        pairs.iter().take(PIPELINE).for_each(|(key, value)| {
            pipe.set(key, value).ignore();
        });
        match pipe.query_async::<()>(&mut theirs.clone()).await {
            Ok(()) => println!("redis-rs cluster client, a pipeline of {PIPELINE} keys: accepted"),
            Err(e) => println!("redis-rs cluster client, a pipeline of {PIPELINE} keys: refused ({e})"),
        }

        println!("{rows} SETs, {} nodes; rows/s of each run, in turn", nodes.len());
        let mut rates: Vec<(String, Vec<f64>)> = Vec::new();
        for _ in 0..runs {
            for in_flight in [IN_FLIGHT, 1000] {
                empty().await?;
                let started = Instant::now();
                futures::stream::iter(&pairs)
                    .map(|(key, value)| {
                        let mut connection = theirs.clone();
                        async move { redis::cmd("SET").arg(key).arg(value).query_async::<()>(&mut connection).await }
                    })
                    .buffer_unordered(in_flight)
                    .try_collect::<()>()
                    .await?;
                let name = format!("redis-rs cluster client, a command at a time, {in_flight} in flight");
                record(&mut rates, &name, rows, started);
            }

            empty().await?;
            let started = Instant::now();
            let per_trip = PIPELINE * ours.nodes().await;
            futures::stream::iter(pairs.chunks(per_trip))
                .map(|chunk| {
                    let mut connection = ours.clone();
                    async move {
                        let mut trip = connection.round_trip(chunk.len()).await;
                        for (row, (key, value)) in chunk.iter().enumerate() {
                            trip.add(redis::Cmd::set(key, value), row as u32..row as u32 + 1);
                        }
                        connection.send(&mut trip).await
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .try_collect::<()>()
                .await?;
            record(&mut rates, "the sink's routing, 100 per node per round trip, 64 round trips", rows, started);
        }
        for (name, rates) in rates {
            let shown: Vec<String> = rates.iter().map(|r| format!("{r:>9.0}")).collect();
            println!("{name:<64} {}", shown.join(" "));
        }
        anyhow::Ok(())
    })
}

fn record(rates: &mut Vec<(String, Vec<f64>)>, name: &str, rows: usize, started: Instant) {
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    match rates.iter_mut().find(|(n, _)| n == name) {
        Some((_, list)) => list.push(rate),
        None => rates.push((name.to_string(), vec![rate])),
    }
}
