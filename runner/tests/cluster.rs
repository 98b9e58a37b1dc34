//! The Redis sink (and `runner lookup`, and a Redis dead letter) on a real Redis Cluster of three
//! nodes: `REDIS_URL=redis+cluster://...` switches `pipelines/iris.toml` to it with no edit, and
//! the cluster ends up holding exactly what one server holds; slots moved during a run lose
//! nothing; a node that dies fails the run clearly, and a rerun completes the contents.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::services::{RedisCluster, RedisServer, S3Server};
use common::{root, runner, stderr, stdout, temp};

/// A bucket `batch` with XGBoost's model and `rows` Iris-like rows (all distinct) as data.
fn bucket(dir: &Path, rows: usize) -> S3Server {
    let s3 = S3Server::start();
    s3.bucket("batch");
    s3.put("batch", "artifact/model.json", &root().join("models/iris/model.json"));
    let iris = std::fs::read_to_string(root().join("models/iris/iris.csv")).unwrap();
    let data = if rows == 0 {
        root().join("models/iris/iris.csv")
    } else {
        let mut text = iris.lines().next().unwrap().to_string() + "\n";
        for (i, line) in iris.lines().skip(1).cycle().take(rows).enumerate() {
            let rest = line.split_once(',').unwrap().1;
            text.push_str(&format!("{:.6},{rest}\n", 4.0 + i as f64 / 1_000_000.0));
        }
        let path = dir.join("rows.csv");
        std::fs::write(&path, text).unwrap();
        path
    };
    s3.put("batch", "data/iris.csv", &data);
    s3
}

/// `runner run spec` with the environment of [`S3Server::flagship`].
fn job(s3: &S3Server, redis_url: &str, spec: &Path) -> Command {
    let mut command = s3.flagship(redis_url);
    command.arg("run").arg(spec);
    command
}

/// Waits until the cluster's first node holds `keys` keys: a run is writing.
fn wait_for_keys(cluster: &RedisCluster, keys: usize) {
    let url = format!("redis://127.0.0.1:{}/0", cluster.ports[0]);
    let mut probe = redis::Client::open(url).unwrap().get_connection().unwrap();
    let started = Instant::now();
    while redis::cmd("DBSIZE").query::<usize>(&mut probe).unwrap() < keys {
        assert!(started.elapsed() < Duration::from_secs(60), "the run did not start writing");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn iris_spec() -> PathBuf {
    root().join("pipelines/iris.toml")
}

/// The Iris pipeline into the cluster leaves exactly the keys and values one server gets, spread
/// over the three nodes; `runner lookup` reads a row back from the cluster.
#[test]
fn the_iris_pipeline_writes_the_same_into_a_cluster() {
    let Some(cluster) = RedisCluster::start() else { return };
    let Some(single) = RedisServer::start() else { return };
    let dir = temp();
    let s3 = bucket(dir.path(), 0);
    let output = job(&s3, &single.url(), &iris_spec()).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let output = job(&s3, &cluster.url(), &iris_spec()).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(cluster.contents(), single.contents());
    assert_eq!(cluster.contents().len(), 149);

    for (row, label) in [(["5.1", "3.5", "1.4", "0.2"], "setosa"), (["6.3", "3.3", "6.0", "2.5"], "virginica")] {
        let output = s3.flagship(&cluster.url()).arg("lookup").arg(iris_spec()).args(row).output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(stdout(&output).trim(), label);
    }
}

/// Every slot the Iris keys hash to is half-way through a move (`MIGRATING` on its owner,
/// `IMPORTING` on the next node): the owner answers `ASK` for each missing key, and the sink and
/// `runner lookup` follow it to the importing node. Once the moves complete, the cluster holds
/// exactly one server's contents.
#[test]
fn keys_of_slots_being_moved_are_asked_for_on_the_importing_node() {
    let Some(cluster) = RedisCluster::start() else { return };
    let Some((_dir, s3, reference)) = reference_run(0) else { return };

    let ids = cluster.node_ids();
    let setslot = |node: usize, slot: u16, how: &str, id: &str| {
        cluster.cli(cluster.ports[node]).args(["cluster", "setslot", &slot.to_string(), how, id]).output().unwrap()
    };
    let mut slots: Vec<u16> = reference.iter().map(|(key, _)| runner::redis_client::slot(key.as_bytes())).collect();
    slots.sort();
    slots.dedup();
    let mut moves = Vec::new();
    for &slot in &slots {
        // Only the owner accepts MIGRATING: that is how the test finds it.
        let owner = (0..3)
            .find(|&node| stdout(&setslot(node, slot, "migrating", &ids[(node + 1) % 3])).trim() == "OK")
            .expect("an owner for every slot");
        let to = (owner + 1) % 3;
        assert_eq!(stdout(&setslot(to, slot, "importing", &ids[owner])).trim(), "OK");
        moves.push((slot, to));
    }

    let output = job(&s3, &cluster.url(), &iris_spec()).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let row = ["5.1", "3.5", "1.4", "0.2"];
    let output = s3.flagship(&cluster.url()).arg("lookup").arg(iris_spec()).args(row).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "setosa");

    for (slot, to) in moves {
        for node in 0..3 {
            assert_eq!(stdout(&setslot(node, slot, "node", &ids[to])).trim(), "OK");
        }
    }
    cluster.wait_ok();
    assert!(cluster.contents() == reference, "the cluster's contents differ from one server's");
}

/// A cluster whose nodes ask for a password: `redis+cluster://:password@...` reaches every node
/// with it; a wrong one fails the run in one line that names the cluster and not the password.
#[test]
fn a_password_protected_cluster_takes_the_password_from_the_url() {
    let Some(cluster) = RedisCluster::start_with_password("s3cret-pw") else { return };
    let dir = temp();
    let s3 = bucket(dir.path(), 0);
    let output = job(&s3, &cluster.url(), &iris_spec()).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(cluster.contents().len(), 149);

    let wrong = cluster.url().replace("s3cret-pw", "not-the-pw");
    let output = job(&s3, &wrong, &iris_spec()).output().unwrap();
    let err = stderr(&output);
    assert!(!output.status.success(), "{err}");
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains("redis+cluster://") && line.contains("127.0.0.1:"), "{line}");
    assert!(!err.contains("not-the-pw") && !err.contains("s3cret-pw"), "a password is printed: {err}");
}

/// 200,000 rows into the cluster, while 500 slots move from one node to another
/// (`redis-cli --cluster reshard`): nothing lost, exactly one server's contents.
#[test]
fn slots_moved_during_a_run_lose_nothing() {
    let Some(cluster) = RedisCluster::start() else { return };
    let Some((_dir, s3, reference)) = reference_run(200_000) else { return };
    assert_eq!(reference.len(), 200_000);

    let mut child = job(&s3, &cluster.url(), &iris_spec()).stderr(Stdio::piped()).spawn().unwrap();
    // Move slots once the run is writing.
    wait_for_keys(&cluster, 5_000);
    assert!(child.try_wait().unwrap().is_none(), "the run ended before the slots moved");
    let ids = cluster.node_ids();
    let reshard = Command::new("redis-cli")
        .args(["--cluster", "reshard", &format!("127.0.0.1:{}", cluster.ports[0])])
        .args(["--cluster-from", &ids[0], "--cluster-to", &ids[1], "--cluster-slots", "500", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(reshard.status.success(), "{}", stderr(&reshard));
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    cluster.wait_ok();
    let contents = cluster.contents();
    assert_eq!(contents.len(), reference.len());
    assert!(contents == reference, "the cluster's contents differ from one server's");
}

/// Every key of a server or cluster and its value, sorted.
type Contents = Vec<(String, String)>;

/// A bucket of `rows` Iris-like rows, and what the flagship pipeline writes of them into one
/// server: the contents a cluster must end up with. `None` (skipped) without redis-server.
fn reference_run(rows: usize) -> Option<(tempfile::TempDir, S3Server, Contents)> {
    let single = RedisServer::start()?;
    let dir = temp();
    let s3 = bucket(dir.path(), rows);
    let output = job(&s3, &single.url(), &iris_spec()).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    Some((dir, s3, single.contents()))
}

/// The flagship spec, written into `dir`, with the Redis sink retrying for `seconds`.
fn retrying_spec(dir: &Path, seconds: u64) -> PathBuf {
    let spec = dir.join(format!("retrying-{seconds}.toml"));
    let text = std::fs::read_to_string(iris_spec())
        .unwrap()
        .replace("value = \"label\" }", &format!("value = \"label\", retry_seconds = {seconds} }}"))
        .replace("../plugins/target", &format!("{}/plugins/target", root().display()));
    std::fs::write(&spec, text).unwrap();
    spec
}

/// A node killed mid-run: the run fails once `retry_seconds` have passed, saying it could not
/// write; with the node back, a rerun completes the contents (the writes are idempotent).
#[test]
fn a_dead_node_fails_the_run_and_a_rerun_completes_it() {
    let Some(mut cluster) = RedisCluster::start() else { return };
    let Some((dir, s3, reference)) = reference_run(100_000) else { return };
    let spec = retrying_spec(dir.path(), 3);
    let mut child = job(&s3, &cluster.url(), &spec).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_keys(&cluster, 2_000);
    cluster.kill(2);
    assert!(child.try_wait().unwrap().is_none(), "the run ended before the node was killed");
    let output = child.wait_with_output().unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains("writing to redis+cluster://") && line.contains("still failing after 3 s of retries"),
        "{line}"
    );
    let node = format!("node 127.0.0.1:{}", cluster.ports[2]);
    assert!(line.contains(&node) && line.contains("rows sent were not acknowledged"), "{line}");

    cluster.restart(2);
    rerun_completes(&cluster, &s3, &spec, &reference);
}

/// Once the cluster is ok again, a rerun of `spec` leaves exactly `reference` in it.
fn rerun_completes(cluster: &RedisCluster, s3: &S3Server, spec: &Path, reference: &Contents) {
    cluster.wait_ok();
    let output = job(s3, &cluster.url(), spec).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(cluster.contents() == *reference, "the rerun did not complete the contents");
}

/// A node that stops answering for less than `retry_seconds` loses nothing: its round trips
/// wait and are sent again, while what the other nodes acknowledged is not; once the cluster
/// marks the node as failed (`cluster-node-timeout`, 5 s here) the other nodes answer
/// `CLUSTERDOWN`, and those commands are kept and sent again too.
#[test]
fn a_node_away_within_retry_seconds_loses_nothing() {
    let Some(cluster) = RedisCluster::start() else { return };
    let Some((dir, s3, reference)) = reference_run(100_000) else { return };
    let spec = retrying_spec(dir.path(), 60);
    let mut child = job(&s3, &cluster.url(), &spec).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_keys(&cluster, 2_000);
    cluster.pause(2, true);
    assert!(child.try_wait().unwrap().is_none(), "the run ended before the node stopped answering");
    let mut probe = redis::Client::open(format!("redis://127.0.0.1:{}/0", cluster.ports[0])).unwrap();
    let started = Instant::now();
    while !redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut probe).unwrap().contains("cluster_state:fail") {
        assert!(started.elapsed() < Duration::from_secs(20), "the cluster never marked the node as failed");
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.pause(2, false);
    let output = child.wait_with_output().unwrap();
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    assert!(err.contains("CLUSTERDOWN") || err.contains("ClusterDown"), "no write met a cluster that was down: {err}");
    cluster.wait_ok();
    assert!(cluster.contents() == reference, "the cluster lost rows while a node was away");
}

/// A master killed mid-run, with a replica to take over: the run follows the failover (after a
/// failure it asks the cluster for its slot map again) and completes. A rerun then leaves
/// exactly one server's contents: replication is asynchronous, so the dead master's last
/// acknowledged writes may not have reached its replica, which no client can know.
#[test]
fn a_run_follows_a_failover_to_the_promoted_replica() {
    let Some(mut cluster) = RedisCluster::start_with_replicas() else { return };
    let Some((dir, s3, reference)) = reference_run(100_000) else { return };
    let spec = retrying_spec(dir.path(), 30);
    let mut child = job(&s3, &cluster.url(), &spec).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_keys(&cluster, 2_000);
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "three masters");
    cluster.kill(masters[1]);
    assert!(child.try_wait().unwrap().is_none(), "the run ended before the master was killed");
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the run did not follow the failover: {}", stderr(&output));
    assert_eq!(cluster.masters().len(), 3, "a replica took the dead master's place");
    rerun_completes(&cluster, &s3, &spec, &reference);
}

/// The runner's slot of a key is the cluster's (`CLUSTER KEYSLOT`), hash tags included.
#[test]
fn keys_hash_to_the_slots_the_cluster_uses() {
    let Some(cluster) = RedisCluster::start() else { return };
    let mut node =
        redis::Client::open(format!("redis://127.0.0.1:{}/0", cluster.ports[0])).unwrap().get_connection().unwrap();
    let keys = ["", "a", "foo", "123456789", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "{a", "}{", "é{ü}"];
    let long: Vec<String> = (0..200).map(|i| format!("{:064x}", i * 7919)).collect();
    for key in keys.iter().map(|k| k.to_string()).chain(long) {
        let theirs: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(&key).query(&mut node).unwrap();
        assert_eq!(runner::redis_client::slot(key.as_bytes()), theirs, "key {key:?}");
    }
}

/// Hashes (`fields`), expiries (`ttl_seconds`) and a Redis dead-letter list behave in a cluster
/// as on one server.
#[test]
fn hashes_expiries_and_dead_letters_work_in_a_cluster() {
    let Some(cluster) = RedisCluster::start() else { return };
    let Some(single) = RedisServer::start() else { return };
    let dir = temp();
    let data = dir.path().join("dirty.csv");
    let iris = std::fs::read_to_string(root().join("models/iris/iris.csv")).unwrap();
    let mut text: String = iris.lines().take(60).map(|l| format!("{l}\n")).collect();
    text.push_str("5.0,not-a-number,1.0,0.2\n6.1,2.8,x,1.2\n");
    std::fs::write(&data, text).unwrap();
    let spec = |url: &str| {
        let path = dir.path().join("spec.toml");
        std::fs::write(
            &path,
            format!(
                r#"[source]
kind = "csv"
on_error = "dead-letter"
dead_letter = {{ url = "{url}", list = "rejected" }}
config = {{ url = "{data}", columns = {{ sepal_length = "f64", sepal_width = "f64", petal_length = "f64", petal_width = "f64" }} }}

[[transform]]
kind = "row-key"
config = {{ columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"] }}

[sink]
kind = "redis"
config = {{ url = "{url}", fields = ["sepal_length", "petal_width"], ttl_seconds = 3600 }}
"#,
                data = data.display()
            ),
        )
        .unwrap();
        path
    };
    for url in [single.url(), cluster.url()] {
        let output = runner().arg("run").arg(spec(&url)).output().unwrap();
        assert!(output.status.success(), "{url}: {}", stderr(&output));
        assert!(stderr(&output).contains("(2 rows rejected)"), "{}", stderr(&output));
    }
    let single_contents = stored(&[single.port]);
    assert_eq!(single_contents.len(), 60, "59 distinct rows and the dead-letter list");
    assert_eq!(stored(&cluster.ports), single_contents);
}

/// Every key of the nodes on `ports`: a hash as its sorted fields, a list as its entries'
/// `reason`s; and whether it expires.
fn stored(ports: &[u16]) -> Vec<(String, Vec<String>, bool)> {
    let mut all = Vec::new();
    for port in ports {
        let mut node = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap().get_connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut node).unwrap();
        for key in keys {
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut node).unwrap();
            let values: Vec<String> = match kind.as_str() {
                "hash" => {
                    let fields: Vec<(String, String)> = redis::cmd("HGETALL").arg(&key).query(&mut node).unwrap();
                    fields.into_iter().map(|(f, v)| format!("{f}={v}")).collect()
                }
                "list" => {
                    let entries: Vec<String> = redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query(&mut node).unwrap();
                    entries
                        .iter()
                        .map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap()["reason"].to_string())
                        .collect()
                }
                other => panic!("unexpected {other} at {key}"),
            };
            let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut node).unwrap();
            let mut values = values;
            values.sort();
            all.push((key, values, ttl > 0));
        }
    }
    all.sort();
    all
}
