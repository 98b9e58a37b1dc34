//! Sharded runs: N processes, each `runner run --shard i/N`, read every row of the input exactly
//! once between them, whatever N, however objects are cut into splits (lines straddling every
//! boundary, lines starting exactly at one, CRLF, no final newline, empty and tiny objects);
//! together they leave exactly what one run leaves, in files and in Redis.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::services::{RedisServer, S3_ACCESS_KEY, S3_SECRET_KEY, S3Server};
use common::{root, runner, stderr, stdout, temp};

const SHARD_COUNTS: [u32; 5] = [1, 2, 3, 7, 16];

/// A deterministic pseudo-random sequence (a linear congruential generator).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// `rows` lines `id,word`: ids in order, words of 1-25 letters, so lines straddle any boundary.
fn rows(rows: usize, first_id: usize, seed: u64) -> Vec<String> {
    let mut random = Lcg(seed);
    (0..rows)
        .map(|i| {
            let word: String = (0..1 + random.next(25)).map(|k| (b'a' + ((i as u64 + k) % 26) as u8) as char).collect();
            format!("{},{word}", first_id + i)
        })
        .collect()
}

/// A spec reading `url` with `split_bytes`, writing CSV to standard output.
fn csv_spec(dir: &Path, url: &str, split_bytes: u64) -> PathBuf {
    let path = dir.join(format!("spec-{split_bytes}.toml"));
    std::fs::write(
        &path,
        format!(
            "[source]\nkind = \"csv\"\nconfig = {{ url = \"{url}\", split_bytes = {split_bytes} }}\n\n\
             [sink]\nkind = \"csv\"\nconfig = {{ url = \"-\" }}\n"
        ),
    )
    .unwrap();
    path
}

fn run_shard(spec: &Path, shard: Option<(u32, u32)>) -> Output {
    let mut command = runner();
    command.args(["run", "--quiet"]);
    if let Some((index, count)) = shard {
        command.arg("--shard").arg(format!("{index}/{count}"));
    }
    let output = command.arg(spec).output().unwrap();
    assert!(output.status.success(), "{shard:?}: {}", stderr(&output));
    output
}

/// The data lines of a CSV output (its header, when it has one, left out) and the header.
fn data_lines(output: &Output) -> (Option<String>, Vec<String>) {
    let text = stdout(output);
    let mut lines = text.lines().map(str::to_string);
    let header = lines.next();
    (header, lines.collect())
}

/// For every shard count, the shards' rows put together in shard order are the single run's
/// rows, in the same order: none missing, none twice.
fn assert_shards_equal_one_run(what: &str, spec: &Path) {
    let (header, all) = data_lines(&run_shard(spec, None));
    assert!(!all.is_empty(), "{what}: the single run read no rows");
    for count in SHARD_COUNTS {
        let mut union = Vec::new();
        for index in 0..count {
            let (shard_header, lines) = data_lines(&run_shard(spec, Some((index, count))));
            if !lines.is_empty() {
                assert_eq!(shard_header, header, "{what}: shard {index}/{count} header");
            }
            union.extend(lines);
        }
        assert_eq!(union.len(), all.len(), "{what}: {count} shards read {} rows, one run {}", union.len(), all.len());
        assert!(union == all, "{what}: {count} shards' rows differ from one run's");
    }
}

/// One object cut into many splits: lines of 3 to 28 bytes against splits of 7, 10 and 64
/// bytes (every boundary inside a line, or exactly at a line's start), then lines of exactly
/// 10 bytes against splits of 10 and 20 (every boundary at a line's start); with CRLF line
/// ends; without a final newline.
#[test]
fn one_object_cut_into_many_splits() {
    let dir = temp();
    let lines = rows(300, 0, 1);
    let fixed: Vec<String> = (0..200).map(|i| format!("{i:04},abcd")).collect(); // 9 bytes + newline
    let cases: Vec<(&str, String, Vec<u64>)> = vec![
        ("lf", format!("id,word\n{}\n", lines.join("\n")), vec![7, 10, 64]),
        ("fixed", format!("id,word\n{}\n", fixed.join("\n")), vec![10, 20]),
        ("crlf", format!("id,word\r\n{}\r\n", lines.join("\r\n")), vec![7, 64]),
        ("no-final-newline", format!("id,word\n{}", lines.join("\n")), vec![7, 64]),
    ];
    for (name, text, split_sizes) in cases {
        let file = dir.path().join(format!("{name}.csv"));
        std::fs::write(&file, &text).unwrap();
        for split_bytes in split_sizes {
            let spec = csv_spec(dir.path(), file.to_str().unwrap(), split_bytes);
            assert_shards_equal_one_run(&format!("{name}, splits of {split_bytes} bytes"), &spec);
        }
    }
}

/// Many objects under a prefix, among them an empty one, one with a header alone and one of a
/// single row; large ones cut into splits, small ones whole.
#[test]
fn many_objects_under_a_prefix() {
    let dir = temp();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a-empty.csv"), "").unwrap();
    std::fs::write(data.join("b-header.csv"), "id,word\n").unwrap();
    std::fs::write(data.join("c-tiny.csv"), "id,word\n1000,x\n").unwrap();
    for (i, name) in ["d-big.csv", "e-mid.csv", "f-big.csv"].iter().enumerate() {
        let n = if name.contains("big") { 400 } else { 40 };
        std::fs::write(data.join(name), format!("id,word\n{}\n", rows(n, 2000 * (i + 1), i as u64).join("\n")))
            .unwrap();
    }
    for split_bytes in [0, 50, 1000] {
        let spec = csv_spec(dir.path(), &format!("{}/", data.display()), split_bytes);
        assert_shards_equal_one_run(&format!("prefix, splits of {split_bytes} bytes"), &spec);
    }
}

/// An S3 server holding `count` lines of [`rows`] as `s3://data/rows.csv`, and the file's size.
fn s3_rows(dir: &Path, count: usize, seed: u64) -> (S3Server, u64) {
    let s3 = S3Server::start();
    s3.bucket("data");
    let file = dir.join("rows.csv");
    std::fs::write(&file, format!("id,word\n{}\n", rows(count, 0, seed).join("\n"))).unwrap();
    s3.put("data", "rows.csv", &file);
    (s3, std::fs::metadata(&file).unwrap().len())
}

/// A spec at `path` reading `s3://data/rows.csv` from `s3` (`source`: the rest of the source's
/// config), writing CSV to standard output.
fn s3_spec(s3: &S3Server, path: &Path, source: &str) -> PathBuf {
    let source = format!("url = \"s3://data/rows.csv\", {source}");
    let sink = "[sink]\nkind = \"csv\"\nconfig = { url = \"-\" }\n";
    let text = format!("{}\n[source]\nkind = \"csv\"\nconfig = {{ {source} }}\n\n{sink}", s3.spec_table());
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// Through an S3-protocol server: an object read in byte ranges by each shard (its columns
/// declared, so the rows are not served from the typing pass's copy).
#[test]
fn an_s3_object_cut_into_splits() {
    let dir = temp();
    let (s3, _) = s3_rows(dir.path(), 2000, 9);
    let source = "split_bytes = 997, columns = { id = \"s64\", word = \"string\" }";
    let spec = s3_spec(&s3, &dir.path().join("s3.toml"), source);
    assert_shards_equal_one_run("s3", &spec);
}

/// An S3 input within the source's memory budget is fetched once: the typing pass keeps its
/// bytes and every split's rows are read from them, in one run as in each shard. With every
/// column declared the pass reads only the header, and the rows come from the server in ranges:
/// the same rows either way.
#[test]
fn a_small_s3_input_is_fetched_once() {
    let dir = temp();
    let (s3, size) = s3_rows(dir.path(), 120_000, 5);
    assert!(size > 2 << 20, "larger than the first chunk, fetched with the HEAD: {size} bytes");
    let spec =
        |name: &str, columns: &str| s3_spec(&s3, &dir.path().join(name), &format!("split_bytes = 262144{columns}"));
    let fetched = |spec: &Path, shard: Option<(u32, u32)>| {
        let before = s3.bytes_served();
        let output = run_shard(spec, shard);
        (s3.bytes_served() - before, data_lines(&output).1)
    };

    let typed = spec("typed.toml", "");
    let (served, all) = fetched(&typed, None);
    assert_eq!(all.len(), 120_000);
    assert_eq!(served, size, "one run fetched {served} bytes of a {size}-byte object");
    for count in [3, 7] {
        let mut union = Vec::new();
        for index in 0..count {
            let (served, lines) = fetched(&typed, Some((index, count)));
            assert_eq!(served, size, "shard {index}/{count} fetched {served} bytes of a {size}-byte object");
            union.extend(lines);
        }
        assert!(union == all, "{count} shards' rows differ from one run's");
    }

    let declared = spec("declared.toml", ", columns = { id = \"s64\", word = \"string\" }");
    let (served, lines) = fetched(&declared, None);
    assert!(lines == all, "with declared types the rows differ");
    assert!(served >= size, "with declared types the rows come from the server: {served} bytes");
}

/// Every shard types the columns from the whole input: a column whose floats come only in the
/// last shard's part is a float column in every shard, so every shard writes `5.0`, not `5`.
#[test]
fn every_shard_types_columns_as_one_run_does() {
    let dir = temp();
    let mut text = String::from("id,x\n");
    for i in 0..300 {
        text.push_str(&format!("{i},{}\n", if i < 280 { format!("{i}") } else { format!("{i}.5") }));
    }
    let file = dir.path().join("late.csv");
    std::fs::write(&file, text).unwrap();
    let spec = csv_spec(dir.path(), file.to_str().unwrap(), 100);
    let (_, first_shard) = data_lines(&run_shard(&spec, Some((0, 4))));
    assert_eq!(first_shard.first().map(String::as_str), Some("0,0.0"), "{first_shard:?}");
    assert_shards_equal_one_run("late floats", &spec);
}

/// `--shards N` takes the index from $JOB_COMPLETION_INDEX (a Kubernetes Indexed Job's); a
/// missing or out-of-range index is a usage error (exit 2); a shard with nothing to read exits
/// 0 with an empty summary; `runner plan` prints each shard's splits.
#[test]
fn the_shard_index_comes_from_the_flag_or_the_job() {
    let dir = temp();
    let file = dir.path().join("small.csv");
    std::fs::write(&file, "id,word\n1,a\n2,b\n").unwrap();
    let spec = csv_spec(dir.path(), file.to_str().unwrap(), 0);
    let run = |args: &[&str], index: Option<&str>| {
        let mut command = runner();
        command.arg("run").args(args).arg(&spec).env_remove("JOB_COMPLETION_INDEX");
        if let Some(index) = index {
            command.env("JOB_COMPLETION_INDEX", index);
        }
        command.output().unwrap()
    };
    let output = run(&["--shards", "3"], Some("0"));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("shard 0/3"), "{}", stderr(&output));
    assert_eq!(data_lines(&output).1, ["1,a", "2,b"]);
    // The one object is all shard 0's: shard 2 reads nothing, and says so.
    let output = run(&["--shards", "3"], Some("2"));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("0 rows read, 0 rows written"), "{}", stderr(&output));
    for (args, index, message) in [
        (vec!["--shards", "3"], None, "--shards needs the shard's index in $JOB_COMPLETION_INDEX"),
        (vec!["--shards", "3"], Some("3"), "shard index 3 is out of range: shards are numbered 0 to 2"),
        (vec!["--shards", "3"], Some("x"), "$JOB_COMPLETION_INDEX is not a number: `x`"),
        (vec!["--shard", "5/4"], None, "shard index 5 is out of range"),
        (vec!["--shard", "1"], None, "expected I/N"),
    ] {
        let output = run(&args, index);
        assert_eq!(output.status.code(), Some(2), "{args:?} {index:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(message), "{args:?}: {}", stderr(&output));
    }

    let big = dir.path().join("big.csv");
    std::fs::write(&big, format!("id,word\n{}\n", rows(1000, 0, 3).join("\n"))).unwrap();
    let spec = csv_spec(dir.path(), big.to_str().unwrap(), 4000);
    let output = runner().args(["plan", "--shards", "2"]).arg(&spec).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.starts_with("shard 0/2: "), "{out}");
    assert!(out.contains(&format!("  {}  bytes 0..4000  about ", big.display())), "{out}");
    assert!(out.contains("shard 1/2: "), "{out}");
    // The JSON report of a shard names it and its splits.
    let output = runner().args(["run", "--shard", "1/2", "--report", "json"]).arg(&spec).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(stderr(&output).lines().last().unwrap()).unwrap();
    assert_eq!(report["shard"], serde_json::json!({ "index": 1, "count": 2 }));
    let splits = report["splits"].as_array().unwrap();
    assert!(!splits.is_empty(), "shard 1 of 2 reads part of the object: {report}");
    assert!(splits.iter().all(|s| s["object"] == big.display().to_string()), "{report}");
}

/// A quoted field holding a newline cannot be cut at line breaks: a shard that meets one in a
/// split object fails and says to set `split_bytes = 0`, with which the shards read it right.
#[test]
fn a_quoted_newline_in_a_split_object_is_refused() {
    let dir = temp();
    let mut text = String::from("id,note\n");
    for i in 0..100 {
        text.push_str(&format!("{i},{}\n", if i == 50 { "\"two\nlines\"".to_string() } else { format!("n{i}") }));
    }
    let file = dir.path().join("quoted.csv");
    std::fs::write(&file, text).unwrap();
    let spec = csv_spec(dir.path(), file.to_str().unwrap(), 64);
    let failures: Vec<String> = (0..4)
        .map(|i| runner().args(["run", "--shard", &format!("{i}/4")]).arg(&spec).output().unwrap())
        .filter(|o| !o.status.success())
        .map(|o| stderr(&o))
        .collect();
    assert!(!failures.is_empty(), "no shard noticed the quoted newline");
    assert!(
        failures.iter().any(|e| e.contains("a quoted field holds a newline") && e.contains("split_bytes = 0")),
        "{failures:?}"
    );
    let spec = csv_spec(dir.path(), file.to_str().unwrap(), 0);
    assert_shards_equal_one_run("quoted, whole", &spec);
}

/// The flagship job as four concurrent shard processes into one Redis: exactly the keys and
/// values of one run. Then a shard killed mid-run and run again alone completes the job (the
/// keys are idempotent).
#[test]
fn four_concurrent_shards_fill_redis_as_one_run_does() {
    let Some(one) = RedisServer::start() else { return };
    let Some(shared) = RedisServer::start() else { return };
    let s3 = S3Server::start();
    s3.bucket("batch");
    s3.put("batch", "artifact/model.json", &root().join("models/iris/model.json"));
    let dir = temp();
    // Iris-like rows in three objects, cut into splits of 64 KiB.
    let iris = std::fs::read_to_string(root().join("models/iris/iris.csv")).unwrap();
    let (header, body): (&str, Vec<&str>) = (iris.lines().next().unwrap(), iris.lines().skip(1).collect());
    for part in 0..3 {
        let mut text = format!("{header}\n");
        for i in 0..8000 {
            // Iris rows, each made unique (every row its own key) by its first value.
            let row: Vec<f64> = body[(i + part * 7) % body.len()].split(',').map(|v| v.parse().unwrap()).collect();
            let unique = (part * 8000 + i) as f64 / 100_000.0;
            text.push_str(&format!("{:.5},{},{},{}\n", row[0] + unique, row[1], row[2], row[3]));
        }
        let file = dir.path().join(format!("part-{part}.csv"));
        std::fs::write(&file, text).unwrap();
        s3.put("batch", &format!("data/part-{part}.csv"), &file);
    }
    let spec_text = std::fs::read_to_string(root().join("pipelines/iris.toml"))
        .unwrap()
        .replace("s3://${S3_BUCKET:-batch}/data/iris.csv\" }", "s3://batch/data/\", split_bytes = 65536 }")
        .replace("../plugins/target", &format!("{}/plugins/target", root().display()));
    let spec = dir.path().join("iris-sharded.toml");
    std::fs::write(&spec, spec_text).unwrap();
    common::plugins();
    let job = |redis: &RedisServer, shard: Option<&str>| {
        let mut command = runner();
        command
            .env("S3_ENDPOINT", s3.endpoint())
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
            .env("REDIS_URL", redis.url())
            .args(["run", "--quiet"]);
        if let Some(shard) = shard {
            command.args(["--shard", shard]);
        }
        command.arg(&spec);
        command
    };
    let output = job(&one, None).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let reference = one.contents();
    assert!(reference.len() > 10_000, "{} keys", reference.len());

    let children: Vec<std::process::Child> = (0..4)
        .map(|i| job(&shared, Some(&format!("{i}/4"))).stderr(std::process::Stdio::piped()).spawn().unwrap())
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
    }
    assert!(shared.contents() == reference, "four shards left other contents than one run");

    // Shard 2 dies (SIGKILL) partway; the others completed. Running it again alone completes it.
    // (The run that dies is slowed by a pass-through step, so it is surely killed partway.)
    let slow = dir.path().join("iris-sharded-slow.toml");
    let slowed = std::fs::read_to_string(&spec).unwrap().replacen("[pipeline]\n", "[pipeline]\nbatch_rows = 500\n", 1).replace(
        "[sink]",
        "[[transform]]\nname = \"slow\"\nplugin = \"hostile\"\nworkers = 1\nconfig = { attack = \"slow\", value = \"300\" }\n\n[sink]",
    );
    std::fs::write(&slow, slowed).unwrap();
    redis::cmd("FLUSHALL").query::<()>(&mut shared.connection()).unwrap();
    for i in [0, 1, 3] {
        assert!(job(&shared, Some(&format!("{i}/4"))).output().unwrap().status.success());
    }
    let size = || redis::cmd("DBSIZE").query::<usize>(&mut shared.connection()).unwrap();
    let before = size();
    let dying = job(&shared, Some("2/4"));
    let args: Vec<_> = dying.get_args().map(|a| a.to_owned()).collect();
    let mut dying_command = runner();
    dying_command.envs(dying.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))));
    let args: Vec<_> = args.iter().filter(|a| *a != "--quiet").collect();
    dying_command.args(&args[..args.len() - 1]).arg(&slow).stderr(std::process::Stdio::piped());
    let mut killed = dying_command.spawn().unwrap();
    let started = std::time::Instant::now();
    while size() == before {
        if let Ok(Some(_)) = killed.try_wait() {
            let output = killed.wait_with_output().unwrap();
            panic!("the slowed shard 2 ended early ({}): {}", output.status, stderr(&output));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "shard 2 wrote nothing");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    killed.kill().unwrap();
    let _ = killed.wait();
    let partial = shared.contents().len();
    assert!(partial > before && partial < reference.len(), "{before} < {partial} < {}", reference.len());
    let output = job(&shared, Some("2/4")).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(shared.contents() == reference, "the rerun of shard 2 did not complete the job");
}

/// File sinks and dead letters take `s3://` URLs and a `{shard}` placeholder: each shard writes
/// its own part, visible only once the shard succeeds, and the parts put together are one run's
/// output. A shard that fails leaves no part.
#[test]
fn each_shard_writes_its_own_part_to_s3() {
    let s3 = S3Server::start();
    s3.bucket("out");
    let dir = temp();
    let data = dir.path().join("rows.csv");
    let mut text = format!("id,word\n{}\n", rows(600, 0, 5).join("\n"));
    text.push_str("600,a,surplus\n"); // a bad row, in the last shard's part
    std::fs::write(&data, &text).unwrap();
    let spec = |sink: &str, on_error: &str| {
        let path = dir.path().join("to-s3.toml");
        std::fs::write(
            &path,
            format!(
                "{}\n[source]\nkind = \"csv\"\nconfig = {{ url = \"{}\", split_bytes = 500 }}\n{on_error}\n\n\
                 [sink]\nkind = \"csv\"\nconfig = {{ url = \"{sink}\" }}\n",
                s3.spec_table(),
                data.display()
            ),
        )
        .unwrap();
        path
    };
    let dead_letter = "on_error = \"dead-letter\"\ndead_letter = { url = \"s3://out/rejected/part-{shard}.jsonl\" }";
    let one = spec("s3://out/one.csv", dead_letter);
    assert!(run_shard(&one, None).status.success());
    let whole = String::from_utf8(s3.get("out", "one.csv").expect("one run's output")).unwrap();
    let parts_spec = spec("s3://out/scores/part-{shard}.csv", dead_letter);
    for index in 0..3 {
        run_shard(&parts_spec, Some((index, 3)));
    }
    assert_eq!(s3.keys("out", "scores/"), ["scores/part-0.csv", "scores/part-1.csv", "scores/part-2.csv"]);
    let mut union: Vec<String> = Vec::new();
    for index in 0..3 {
        let part = String::from_utf8(s3.get("out", &format!("scores/part-{index}.csv")).unwrap()).unwrap();
        let mut lines = part.lines().map(str::to_string);
        assert_eq!(lines.next().as_deref(), Some("id,word"));
        union.extend(lines);
    }
    assert_eq!(union, whole.lines().skip(1).map(str::to_string).collect::<Vec<_>>());
    // The bad row went to the last shard's dead letter, and only there.
    let letters: Vec<String> = s3.keys("out", "rejected/");
    let rejected: Vec<String> = letters
        .iter()
        .flat_map(|key| {
            String::from_utf8(s3.get("out", key).unwrap()).unwrap().lines().map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(rejected.len(), 1, "{letters:?}: {rejected:?}");
    assert!(rejected[0].contains("found 3 fields, but the header has 2"), "{rejected:?}");

    // With the bad row failing its shard, that shard leaves no part (and no dead letter).
    let failing = spec("s3://out/failing/part-{shard}.csv", "");
    for index in 0..3 {
        let mut command = runner();
        let output = command.args(["run", "--quiet", "--shard", &format!("{index}/3")]).arg(&failing).output().unwrap();
        assert_eq!(output.status.success(), index < 2, "shard {index}: {}", stderr(&output));
    }
    assert_eq!(s3.keys("out", "failing/"), ["failing/part-0.csv", "failing/part-1.csv"]);
}

/// A plugin source learns its shard from the host (`host.shard`, contract 0.2.1): the `generate`
/// example makes each shard's share of the rows, together one run's rows. A source built
/// against 0.2.0 cannot know its shard: it runs as before unsharded, and a sharded run refuses
/// it, saying why (exit 2).
#[test]
fn a_plugin_source_learns_its_shard() {
    common::plugins();
    let dir = temp();
    let spec = dir.path().join("generate.toml");
    std::fs::write(
        &spec,
        format!(
            "[pipeline]\nplugin_dir = \"{}\"\nbatch_rows = 100\n\n[source]\nplugin = \"generate\"\n\
             config = {{ rows = 1000, seed = 3 }}\n\n[sink]\nkind = \"csv\"\nconfig = {{ url = \"-\" }}\n",
            common::plugin_dir().display()
        ),
    )
    .unwrap();
    assert_shards_equal_one_run("generate", &spec);

    let old = dir.path().join("old.toml");
    std::fs::write(
        &old,
        format!(
            "[pipeline]\nplugin_dir = \"{}\"\n\n[source]\nplugin = \"contract-v0-2-0-source\"\n\n\
             [sink]\nkind = \"csv\"\nconfig = {{ url = \"-\" }}\n",
            common::plugin_dir().display()
        ),
    )
    .unwrap();
    let (_, rows) = data_lines(&run_shard(&old, None));
    assert_eq!(rows.len(), 3);
    let output = runner().args(["run", "--shard", "0/2"]).arg(&old).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output)
            .contains("was built against contract etl:plugin/source@0.2.0, which cannot tell a source its shard"),
        "{}",
        stderr(&output)
    );
}
