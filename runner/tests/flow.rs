//! The original flow, for real: `pipelines/iris.toml` reads the data and the model from an
//! S3-protocol server, keys and scores every row, and writes Redis; `runner lookup` reads it
//! back; broken credentials, buckets, keys and servers each fail with one clear line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::services::{RedisServer, S3_ACCESS_KEY, S3_SECRET_KEY, S3Server, python_has};
use common::{root, runner, stderr, stdout};

/// An S3 server holding the bucket `batch` as the original flow expects it.
fn bucket() -> S3Server {
    let s3 = S3Server::start();
    s3.bucket("batch");
    s3.put("batch", "data/iris.csv", &root().join("models/iris/iris.csv"));
    s3.put("batch", "artifact/model.onnx", &root().join("models/iris/model.onnx"));
    s3.put("batch", "artifact/model.json", &root().join("models/iris/model.json"));
    s3
}

fn run(mut command: Command, args: &[&str]) -> Output {
    command.args(args).output().expect("start runner")
}

/// The original flow's Redis contents: its key and label for every row, one entry per distinct
/// key (Iris has two identical rows, so 149 keys for 150 rows).
fn expected_contents() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("models/iris/expected-keys.csv")).unwrap();
    let mut pairs: Vec<(String, String)> = text
        .lines()
        .skip(1)
        .map(|l| {
            let (k, v) = l.split_once(',').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    pairs.sort();
    pairs.dedup();
    pairs
}

/// End to end against real servers: Redis ends up holding exactly the original flow's keys and
/// labels, and `runner lookup` finds rows of the data set.
#[test]
fn iris_flow_writes_the_original_keys_and_labels() {
    let Some(redis) = RedisServer::start() else { return };
    let s3 = bucket();
    let output = run(s3.flagship(&redis.url()), &["run", "pipelines/iris.toml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("150 rows read, 150 rows written"), "{}", stderr(&output));

    let expected = expected_contents();
    assert_eq!(expected.len(), 149, "two Iris rows are identical, so they share a key");
    assert_eq!(redis.contents(), expected);

    // A rerun rewrites the same keys with the same values: nothing else appears.
    let output = run(s3.flagship(&redis.url()), &["run", "--quiet", "pipelines/iris.toml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(redis.contents(), expected);

    // Look rows up by their values, as a client holding the input would.
    let rows = std::fs::read_to_string(root().join("models/iris/iris.csv")).unwrap();
    let labels = std::fs::read_to_string(root().join("models/iris/expected.csv")).unwrap();
    for (row, label) in rows.lines().skip(1).zip(labels.lines().skip(1)).step_by(37) {
        let values: Vec<&str> = row.split(',').collect();
        let mut args = vec!["lookup", "pipelines/iris.toml"];
        args.extend(&values);
        let output = run(s3.flagship(&redis.url()), &args);
        assert!(output.status.success(), "lookup {row}: {}", stderr(&output));
        assert_eq!(stdout(&output).trim(), label.split(',').nth(1).unwrap(), "lookup {row}");
    }
    // An integer for a float column is typed as the pipeline types it (5 -> 5.0).
    let output =
        run(s3.flagship(&redis.url()), &["lookup", "--show-key", "pipelines/iris.toml", "5", "3.4", "1.5", "0.2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).ends_with("setosa\n"), "{}", stdout(&output));
    // A row the pipeline never saw.
    let output = run(s3.flagship(&redis.url()), &["lookup", "pipelines/iris.toml", "9.9", "9.9", "9.9", "9.9"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("nothing is stored under key "), "{}", stderr(&output));
}

/// `pipelines/iris-onnx.toml` (the model exported to ONNX, scored through tract) validates, and
/// run against the same servers leaves exactly the original flow's keys and labels.
#[test]
fn the_onnx_pipeline_writes_the_same_keys_and_labels() {
    let Some(redis) = RedisServer::start() else { return };
    let s3 = bucket();
    let output = run(s3.flagship(&redis.url()), &["validate", "pipelines/iris-onnx.toml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("pipelines/iris-onnx.toml: ok"), "{}", stdout(&output));
    let output = run(s3.flagship(&redis.url()), &["run", "pipelines/iris-onnx.toml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("150 rows read, 150 rows written"), "{}", stderr(&output));
    assert_eq!(redis.contents(), expected_contents());
}

/// `rediss://` speaks TLS and trusts the certificate authorities of the system or of
/// `SSL_CERT_FILE`; a server whose certificate it cannot trust is refused at once, not retried.
#[test]
fn the_flow_writes_over_tls_to_a_server_it_trusts() {
    let Some(redis) = RedisServer::start_tls() else { return };
    let s3 = bucket();
    let mut command = s3.flagship(&redis.tls_url());
    command.env("SSL_CERT_FILE", redis.ca_file());
    let output = run(command, &["run", "--quiet", "pipelines/iris.toml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(redis.contents(), expected_contents());

    let mut command = s3.flagship(&redis.tls_url());
    command.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    let output = run(command, &["run", "--quiet", "pipelines/iris.toml"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains(&format!("connecting to {}: invalid peer certificate", redis.tls_url())), "{message}");
    assert!(!message.contains("retries"), "an untrusted certificate is not worth retrying: {message}");
}

/// A source given as a prefix reads every object under it, in name order.
#[test]
fn a_prefix_source_reads_every_object() {
    let Some(redis) = RedisServer::start() else { return };
    let s3 = bucket();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("models/iris/iris.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (name, part) in [("part-1.csv", &lines[1..76]), ("part-2.csv", &lines[76..])] {
        let file = dir.path().join(name);
        std::fs::write(&file, format!("{}\n{}\n", lines[0], part.join("\n"))).unwrap();
        s3.put("batch", &format!("data/parts/{name}"), &file);
    }
    let spec = write_spec(dir.path(), "s3://batch/data/parts/", "s3://batch/artifact/model.onnx", &s3);
    let output = run(s3.flagship(&redis.url()), &["run", spec.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("150 rows read"), "{}", stderr(&output));
    assert_eq!(redis.contents(), expected_contents());
}

/// `pipelines/iris.toml` with other data and model URLs, in `dir`.
fn write_spec(dir: &Path, data: &str, model: &str, s3: &S3Server) -> PathBuf {
    let text = std::fs::read_to_string(root().join("pipelines/iris.toml"))
        .unwrap()
        .replace("s3://${S3_BUCKET:-batch}/data/iris.csv", data)
        .replace("s3://${S3_BUCKET:-batch}/artifact/model.json", model)
        .replace("../plugins/target", &format!("{}/plugins/target", root().display()))
        .replace("${S3_ENDPOINT:-http://127.0.0.1:9000}", &s3.endpoint());
    let path = dir.join("spec.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Wrong credentials, a missing bucket, a missing object and an unreachable Redis: each is one
/// error line naming the URL, never the secret, with a non-zero exit.
#[test]
fn service_failures_name_the_url_and_hide_secrets() {
    let Some(redis) = RedisServer::start() else { return };
    let s3 = bucket();
    let dir = tempfile::tempdir().unwrap();
    let secret_env = "not-the-right-secret-4f9a";

    let mut wrong = s3.flagship(&redis.url());
    wrong.env("AWS_SECRET_ACCESS_KEY", secret_env);
    let output = run(wrong, &["run", "pipelines/iris.toml"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    // The data and the model are both refused; the steps open at once, and the run reports
    // whichever refusal comes first.
    let endpoint = s3.endpoint();
    let data = format!("error: step `source`: s3://batch/data/iris.csv (at {endpoint}): access denied");
    let model =
        format!("error: step `score`: asset `model` (s3://batch/artifact/model.json (at {endpoint})): access denied");
    assert!(err.contains(&data) || err.contains(&model), "{err}");
    assert!(!err.contains(secret_env) && !err.contains(S3_SECRET_KEY), "{err}");

    let cases = [
        (
            "s3://nobucket/data/iris.csv",
            "s3://batch/artifact/model.onnx",
            "s3://nobucket/data/iris.csv (at",
            "no such bucket",
        ),
        (
            "s3://batch/data/missing.csv",
            "s3://batch/artifact/model.onnx",
            "s3://batch/data/missing.csv (at",
            "no such object",
        ),
        (
            "s3://batch/data/iris.csv",
            "s3://batch/artifact/missing.onnx",
            "asset `model` (s3://batch/artifact/missing.onnx (at",
            "no such object",
        ),
    ];
    for (data, model, names, reason) in cases {
        let spec = write_spec(dir.path(), data, model, &s3);
        let output = run(s3.flagship(&redis.url()), &["run", spec.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{data} {model}");
        let err = stderr(&output);
        let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {err}"));
        assert!(line.contains(names) && line.contains(reason), "{line}");
        assert!(!err.contains(S3_SECRET_KEY), "{err}");
    }

    // Redis refuses connections: after the configured retry time, one line with the URL (and
    // its password masked).
    let port = redis.port;
    drop(redis);
    let spec = write_spec(dir.path(), "s3://batch/data/iris.csv", "s3://batch/artifact/model.onnx", &s3);
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("value = \"label\" }", "value = \"label\", retry_seconds = 1 }");
    std::fs::write(&spec, text).unwrap();
    let url = format!("redis://:hunter2@127.0.0.1:{port}/0");
    let output = run(s3.flagship(&url), &["run", spec.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains(&format!("error: step `sink`: connecting to redis://:***@127.0.0.1:{port}/0: ")), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// Steps open at once, and the first that fails to open stops the run: the others are not
/// waited for. Here the source asks an S3 endpoint that never answers (30 s timeout) while the
/// sink cannot create its directory: the run fails on the sink's error at once. Opened one after
/// the other, the sink would have waited for the source's timeout.
#[test]
fn a_step_that_fails_to_open_is_not_held_up_by_the_others() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap(); // never accepts: no answer
    let dir = common::temp();
    std::fs::write(dir.path().join("blocker"), "a file where the sink wants a directory").unwrap();
    let spec = dir.path().join("stuck.toml");
    std::fs::write(
        &spec,
        format!(
            "[s3]\nendpoint = \"http://{}\"\naccess_key_id = \"{S3_ACCESS_KEY}\"\n\
             secret_access_key = \"{S3_SECRET_KEY}\"\ntimeout_seconds = 30\n\
             [source]\nkind = \"csv\"\nconfig = {{ url = \"s3://batch/data.csv\" }}\n\
             [sink]\nkind = \"csv\"\nconfig = {{ url = \"blocker/out.csv\" }}\n",
            silent.local_addr().unwrap()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let output = runner().args(["run", spec.to_str().unwrap()]).output().expect("start runner");
    let elapsed = started.elapsed();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.starts_with("error: step `sink`: cannot create directory ") && line.contains("blocker"), "{line}");
    assert!(elapsed < std::time::Duration::from_secs(15), "waited {elapsed:?} for the source: {err}");
}

/// An S3 endpoint that takes the connection but never answers: the run gives up after
/// `timeout_seconds` with one line that names the URL and says it timed out.
#[test]
fn an_unresponsive_s3_server_times_out_clearly() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap(); // never accepts: no answer
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("silent.toml");
    std::fs::write(
        &spec,
        format!(
            "[s3]\nendpoint = \"{endpoint}\"\naccess_key_id = \"{S3_ACCESS_KEY}\"\n\
             secret_access_key = \"{S3_SECRET_KEY}\"\ntimeout_seconds = 1\n\
             [source]\nkind = \"csv\"\nconfig = {{ url = \"s3://batch/data.csv\" }}\n\
             [sink]\nkind = \"discard\"\n"
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let output = run(runner(), &["run", spec.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "gave up too late: {:?}", started.elapsed());
    let err = stderr(&output);
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains(&format!("s3://batch/data.csv (at {endpoint}): timed out")), "{line}");
    assert!(!err.contains(S3_SECRET_KEY), "{err}");
}

/// 120,000 deterministic Iris-like rows (two decimals, like bench/make_rows.py makes).
fn many_rows(path: &Path, rows: usize) {
    let mut text = String::from("sepal_length,sepal_width,petal_length,petal_width\n");
    let mut state = 12345u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 40) % 700
    };
    for _ in 0..rows {
        let [a, b, c, d] = [next() + 100, next() + 100, next() + 100, next() % 250 + 10];
        text.push_str(&format!(
            "{}.{:02},{}.{:02},{}.{:02},{}.{:02}\n",
            a / 100,
            a % 100,
            b / 100,
            b % 100,
            c / 100,
            c % 100,
            d / 100,
            d % 100
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// Redis killed and restarted (2 s later) during a run of 120k rows: the sink retries through the outage and
/// the run completes; keys written before the kill died with that server, and a rerun leaves
/// exactly what a clean run leaves (the keys are idempotent).
#[test]
fn redis_killed_mid_run_is_retried_and_a_rerun_restores_everything() {
    let Some(mut redis) = RedisServer::start() else { return };
    let Some(clean) = RedisServer::start() else { return };
    let s3 = bucket();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("many.csv");
    many_rows(&data, 120_000);
    s3.put("batch", "data/many.csv", &data);
    let spec = write_spec(dir.path(), "s3://batch/data/many.csv", "s3://batch/artifact/model.onnx", &s3);

    // The reference: an uninterrupted run.
    let output = run(s3.flagship(&clean.url()), &["run", "--quiet", spec.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let reference = clean.contents();
    assert!(reference.len() > 100_000, "{}", reference.len());

    let mut command = s3.flagship(&redis.url());
    command.args(["run", spec.to_str().unwrap()]).stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    // Kill the server once the run is well under way, and bring it back a moment later.
    common::wait_until("the run writes", std::time::Duration::from_secs(60), || redis.dbsize() > 20_000);
    redis.kill();
    assert!(child.try_wait().unwrap().is_none(), "the run ended before Redis was killed: make it longer");
    std::thread::sleep(std::time::Duration::from_secs(2)); // the outage
    redis.restart();
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the sink should retry through a short outage: {err}");
    assert!(err.contains("retrying in"), "the retries are logged: {err}");
    let after_outage = redis.contents();
    assert!(after_outage.len() < reference.len(), "the keys written before the kill were lost with the server");

    let output = run(s3.flagship(&redis.url()), &["run", "--quiet", spec.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(redis.contents(), reference);
}

/// However slowly a pipeline consumes an object, reading it does not run into the S3 request
/// timeout: the object is read in ranges, each its own short request that runs to its end while
/// the reader is busy. Here the timeout is two seconds and the reader pauses four after the
/// first chunk, with the next ranges in flight; one long GET would be cut off by its timeout
/// (as it was, at 30 s, for a 10-million-row file), and so would ranges left waiting on the
/// reader.
#[tokio::test]
async fn a_slow_reader_outlives_the_request_timeout() {
    use futures::StreamExt;
    use runner::object_url::ObjectUrl;
    use runner::spec::S3Options;

    let s3 = S3Server::start();
    s3.bucket("batch");
    let dir = common::temp();
    let content: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), &content).unwrap();
    s3.put("batch", "big.bin", &dir.path().join("big.bin"));
    let options = S3Options {
        endpoint: Some(s3.endpoint()),
        access_key_id: Some(S3_ACCESS_KEY.into()),
        secret_access_key: Some(S3_SECRET_KEY.into()),
        timeout_seconds: Some(2),
        ..S3Options::default()
    };
    let url = ObjectUrl::parse("s3://batch/big.bin", dir.path(), &options).unwrap();
    let objects = url.objects().await.unwrap();
    assert_eq!(objects.len(), 1);
    let found = objects.into_iter().next().unwrap();
    assert_eq!(found.meta.size, content.len() as u64);

    let size = found.meta.size;
    let mut chunks = Box::pin(url.read_range(found, 0..size));
    let mut read = Vec::new();
    let mut count = 0;
    while let Some(chunk) = chunks.next().await {
        read.extend_from_slice(&chunk.expect("every range is read"));
        count += 1;
        if count == 1 {
            tokio::time::sleep(std::time::Duration::from_secs(4)).await;
        }
    }
    assert_eq!(count, 4, "20 MiB in ranges of 1, 8, 8 and 3 MiB");
    assert!(read == content, "the chunks put together are the object");
}

/// An object replaced while it is being read is not read as a mix of two versions: every range
/// asks for the ETag seen at the start (`If-Match`), and the read fails, saying why. Shown on a
/// local file: the embedded s3s-fs ignores `If-Match`; AWS S3 and MinIO honour it.
#[tokio::test]
async fn an_object_replaced_mid_read_fails_instead_of_mixing_versions() {
    use futures::StreamExt;
    use runner::object_url::ObjectUrl;
    use runner::spec::S3Options;

    let dir = common::temp();
    let path = dir.path().join("data.bin");
    std::fs::write(&path, vec![b'a'; 40 << 20]).unwrap();
    let url = ObjectUrl::parse("data.bin", dir.path(), &S3Options::default()).unwrap();
    let found = url.objects().await.unwrap().into_iter().next().unwrap();
    let size = found.meta.size;
    let mut chunks = Box::pin(url.read_range(found, 0..size));
    let mut outcomes = Vec::new();
    while let Some(chunk) = chunks.next().await {
        if outcomes.is_empty() {
            // Replaced whole, as an upload replaces an object: a read already open keeps the
            // old version; the next range finds a new one.
            std::fs::write(dir.path().join("new.bin"), vec![b'b'; 40 << 20]).unwrap();
            std::fs::rename(dir.path().join("new.bin"), &path).unwrap();
        }
        outcomes.push(chunk.map(|bytes| bytes.iter().all(|&b| b == b'a')).map_err(|e| url.describe(&e)));
    }
    let failed: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(outcomes.iter().all(|o| o != &Ok(false)), "no chunk of the second version is returned: {outcomes:?}");
    assert!(!failed.is_empty(), "the read notices the change: {outcomes:?}");
    assert!(
        failed.iter().all(|e| e.as_str() == "the object changed since it was listed (another version is stored now)"),
        "{failed:?}"
    );
}

/// The S3 server goes away in the middle of reading an object and comes back two seconds
/// later: the range requested during the outage is retried until the server answers, and the
/// object read is byte for byte the object stored.
#[tokio::test]
async fn an_s3_outage_mid_read_is_retried_through() {
    use futures::StreamExt;
    use runner::object_url::ObjectUrl;
    use runner::spec::S3Options;

    let mut s3 = S3Server::start();
    s3.bucket("batch");
    let dir = common::temp();
    let content: Vec<u8> = (0..30u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), &content).unwrap();
    s3.put("batch", "big.bin", &dir.path().join("big.bin"));
    let options = S3Options {
        endpoint: Some(s3.endpoint()),
        access_key_id: Some(S3_ACCESS_KEY.into()),
        secret_access_key: Some(S3_SECRET_KEY.into()),
        timeout_seconds: Some(10),
        ..S3Options::default()
    };
    let url = ObjectUrl::parse("s3://batch/big.bin", dir.path(), &options).unwrap();
    let found = url.objects().await.unwrap().into_iter().next().unwrap();
    let size = found.meta.size;
    let mut chunks = Box::pin(url.read_range(found, 0..size));
    let mut read = Vec::new();
    // The first range came with the lookup; the next two are in flight. Once the server has
    // sent them (1 + 8 + 8 MiB), take it away: the fourth range is asked for while it is down.
    read.extend_from_slice(&chunks.next().await.unwrap().unwrap());
    let sent = 17 << 20;
    let started = std::time::Instant::now();
    while s3.bytes_served() < sent {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "the ranges in flight did not arrive");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let outage = std::time::Instant::now();
    s3.stop();
    let back = tokio::task::spawn_blocking(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        s3.restart();
        s3
    });
    let mut count = 1;
    while let Some(chunk) = chunks.next().await {
        read.extend_from_slice(&chunk.expect("every range is read, retried through the outage"));
        count += 1;
    }
    assert!(outage.elapsed() >= std::time::Duration::from_secs(2), "the read waited for the server");
    let _s3 = back.await.unwrap();
    assert_eq!(count, 5, "30 MiB in ranges of 1, 8, 8, 8 and 5 MiB");
    assert!(read == content, "the chunks put together are the object");
}

/// The S3 server is down when the run starts and back two seconds later: the data's lookup and
/// the model asset are retried until it answers, and Redis ends up with exactly the original
/// flow's contents.
#[test]
fn an_s3_server_down_at_start_up_is_waited_for() {
    let Some(redis) = RedisServer::start() else { return };
    let mut s3 = bucket();
    s3.stop();
    let mut command = s3.flagship(&redis.url());
    command.args(["run", "pipelines/iris.toml"]).stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2)); // the outage
    assert!(child.try_wait().unwrap().is_none(), "the run gave up while the server was down");
    s3.restart();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(redis.contents(), expected_contents());
}

/// Data files the original flow accepts, made from the Iris rows: floats only (the Iris file
/// itself), integers only, integers and floats mixed, a column whose floats start after 5,000
/// rows of integers, and integers with missing values (empty and `NA`).
fn drop_in_cases() -> Vec<(&'static str, String)> {
    let iris = std::fs::read_to_string(root().join("models/iris/iris.csv")).unwrap();
    let header = iris.lines().next().unwrap().to_string();
    let rows: Vec<Vec<f64>> =
        iris.lines().skip(1).map(|l| l.split(',').map(|v| v.parse().unwrap()).collect()).collect();
    let text = |rows: Vec<String>| format!("{header}\n{}\n", rows.join("\n"));
    let int = |x: f64| format!("{}", (x * 10.0).round() as i64);
    let float = |x: f64| format!("{x:?}");
    let ints: Vec<String> = rows.iter().map(|r| r.iter().map(|&x| int(x)).collect::<Vec<_>>().join(",")).collect();
    let mixed: Vec<String> =
        rows.iter().map(|r| format!("{},{},{},{}", int(r[0]), float(r[1]), float(r[2]), float(r[3]))).collect();
    let late: Vec<String> = (0..6000)
        .map(|i| {
            let r = &rows[i % rows.len()];
            let last = if i < 5000 { int(r[3]) } else { float(r[3] + (i % 7) as f64 / 10.0) };
            format!("{},{},{},{last}", int(r[0]), int(r[1]), int(r[2]))
        })
        .collect();
    let missing: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let third = match i % 9 {
                0 => String::new(),
                4 => "NA".to_string(),
                _ => int(r[2]),
            };
            format!("{},{},{third},{}", int(r[0]), int(r[1]), int(r[3]))
        })
        .collect();
    vec![
        ("floats", iris.clone()),
        ("integers", text(ints)),
        ("mixed", text(mixed)),
        ("late-floats", text(late)),
        ("missing", text(missing)),
    ]
}

/// The drop-in promise, checked against the original flow itself (bench/reference/seed_flow.py,
/// pandas and XGBoost): on the same bucket (the data and XGBoost's model.json), the flow and
/// `runner run pipelines/iris.toml` leave identical Redis contents (every key and label), for
/// files of floats, of integers, of both mixed, of integers turning into floats after 5,000
/// rows, and of integers with missing values.
#[test]
fn the_original_flow_and_the_runner_write_the_same_redis() {
    if !python_has(&["pandas", "xgboost", "sklearn", "redis", "boto3"], common::PIP_INSTALL) {
        return;
    }
    let Some(redis) = RedisServer::start() else { return };
    let s3 = bucket();
    let dir = tempfile::tempdir().unwrap();
    for (case, text) in drop_in_cases() {
        s3.bucket(case);
        let data = dir.path().join(format!("{case}.csv"));
        std::fs::write(&data, &text).unwrap();
        s3.put(case, "data/iris.csv", &data);
        s3.put(case, "artifact/model.json", &root().join("models/iris/model.json"));
        redis::cmd("FLUSHALL").query::<()>(&mut redis.connection()).unwrap();

        let original = Command::new(common::python())
            .arg(root().join("bench/reference/seed_flow.py"))
            .args(["--endpoint", &s3.endpoint(), "--bucket", case, "--redis"])
            .arg(format!("redis://127.0.0.1:{}/1", redis.port))
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
            .output()
            .unwrap();
        assert!(original.status.success(), "{case}: the original flow failed: {}", stderr(&original));

        let mut ours = s3.flagship(&format!("redis://127.0.0.1:{}/2", redis.port));
        ours.env("S3_BUCKET", case);
        let output = run(ours, &["run", "pipelines/iris.toml"]);
        assert!(output.status.success(), "{case}: {}", stderr(&output));

        let (theirs, ours) = (redis.contents_of(1), redis.contents_of(2));
        assert!(theirs.len() > 100, "{case}: the original flow wrote {} keys", theirs.len());
        assert!(
            theirs == ours,
            "{case}: {} keys from the original flow, {} from the runner; first differences: {:?}",
            theirs.len(),
            ours.len(),
            theirs.iter().zip(&ours).filter(|(a, b)| a != b).take(3).collect::<Vec<_>>()
        );
    }
}

/// The SHA-256 of the original flow as the project was given it (`shared/reference/seed_flow.py`,
/// beside the first checkout), recorded so that a clone, which has no copy of that, checks too.
const GIVEN_FLOW_SHA256: &str = "b4029ec278bf1db1423a54ae8ed0bb70b153b260dad0c1f5309063c592e1eba4";

/// The flow the tests run (bench/reference/seed_flow.py) is the one the project was given, byte
/// for byte: in every clone, by its recorded digest, and against the given file itself where it
/// is at hand.
#[test]
fn the_reference_flow_is_the_given_one_verbatim() {
    use sha2::Digest;
    let ours = std::fs::read(root().join("bench/reference/seed_flow.py")).unwrap();
    let digest: String = sha2::Sha256::digest(&ours).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digest, GIVEN_FLOW_SHA256, "bench/reference/seed_flow.py is not the flow the project was given");
    let given = root().join("../shared/reference/seed_flow.py");
    if let Ok(given) = std::fs::read(given) {
        assert!(given == ours, "the given flow changed: record its digest again only if it was replaced on purpose");
    }
}
