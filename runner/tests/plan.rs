//! Plan files: `runner plan --out` lists and types the input once; shards run from the plan
//! read only their own splits (bytes counted by the tests' S3 server), together exactly what one
//! run reads; an object changed since the plan, a changed spec and a plan for another number of
//! shards are refused; `runner lookup --plan` reads nothing of the input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::services::{RedisServer, S3Server};
use common::{runner, stderr, stdout, temp};

/// A deterministic pseudo-random sequence (a linear congruential generator).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// A CSV object of `rows` rows `id,word,x` (ids from `first_id`; `x` a float, so the typing pass
/// has something to decide), with its header.
fn csv_rows(rows: usize, first_id: usize, seed: u64) -> String {
    let mut random = Lcg(seed);
    let mut text = String::from("id,word,x\n");
    for i in 0..rows {
        let word: String = (0..1 + random.next(25)).map(|k| (b'a' + ((i as u64 + k) % 26) as u8) as char).collect();
        text.push_str(&format!("{},{word},{}.{}\n", first_id + i, random.next(100), random.next(1000)));
    }
    text
}

/// An S3 prefix `batch/in/` of three objects: `a.csv` large enough to be cut into byte ranges
/// (6 MB, splits of 2 MiB), `b.csv` and `c.csv` smaller than a split. Returns the input's bytes.
fn s3_input(s3: &S3Server, dir: &Path) -> u64 {
    s3.bucket("batch");
    let mut size = 0;
    for (name, rows, first, seed) in
        [("a.csv", 200_000, 0, 1), ("b.csv", 50_000, 200_000, 2), ("c.csv", 50_000, 250_000, 3)]
    {
        let path = dir.join(name);
        std::fs::write(&path, csv_rows(rows, first, seed)).unwrap();
        size += std::fs::metadata(&path).unwrap().len();
        s3.put("batch", &format!("in/{name}"), &path);
    }
    size
}

/// A spec reading the prefix into `sink` (a TOML `[sink]` table).
fn spec(s3: &S3Server, dir: &Path, name: &str, sink: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "{}\n[source]\nkind = \"csv\"\nconfig = {{ url = \"s3://batch/in/\", split_bytes = 2097152 }}\n\n{sink}",
        s3.spec_table()
    );
    std::fs::write(&path, text).unwrap();
    path
}

const STDOUT_SINK: &str = "[sink]\nkind = \"csv\"\nconfig = { url = \"-\" }\n";

fn ok(output: Output, what: &str) -> Output {
    assert!(output.status.success(), "{what}: {}", stderr(&output));
    output
}

/// The CSV rows a run printed, its header left out.
fn rows_of(output: &Output) -> Vec<String> {
    stdout(output).lines().skip(1).map(str::to_string).collect()
}

fn make_plan(spec: &Path, shards: u32, out: &Path) -> Output {
    let mut command = runner();
    command.arg("plan").arg(spec).arg("--shards").arg(shards.to_string()).arg("--out").arg(out);
    ok(command.output().unwrap(), "runner plan --out")
}

fn run_planned(spec: &Path, plan: &Path, index: u32, count: u32) -> Output {
    let mut command = runner();
    command.args(["run", "--report", "json"]).arg(spec).arg("--plan").arg(plan);
    command.arg("--shard").arg(format!("{index}/{count}"));
    command.output().unwrap()
}

/// The JSON report: the last line of standard error.
fn report(output: &Output) -> serde_json::Value {
    let text = stderr(output);
    serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Four shards from one plan over three objects, one cut into byte ranges: together they print
/// exactly one run's rows, and read the input once between them (the plan's typing pass reads
/// it once more): at most 1.05x its bytes for the shards, 2.05x with the plan.
#[test]
fn four_shards_from_one_plan_read_the_input_once() {
    let dir = temp();
    let s3 = S3Server::start();
    let size = s3_input(&s3, dir.path());
    let spec = spec(&s3, dir.path(), "spec.toml", STDOUT_SINK);
    let mut one: Vec<String> = rows_of(&ok(runner().args(["run", "--quiet"]).arg(&spec).output().unwrap(), "one run"));
    assert_eq!(one.len(), 300_000);

    let plan = dir.path().join("plan.json");
    let before = s3.bytes_served();
    let printed = make_plan(&spec, 4, &plan);
    let planning = s3.bytes_served() - before;
    assert!(stdout(&printed).contains("plan written to"), "{}", stdout(&printed));
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    assert_eq!(file["version"], 1);
    assert_eq!(file["shards"], 4);
    assert_eq!(file["source"]["objects"].as_array().unwrap().len(), 3);
    assert!(file["source"]["objects"].as_array().unwrap().iter().all(|o| o["etag"].is_string()), "{file}");
    let types: Vec<(&str, &str)> = file["source"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["type"].as_str().unwrap()))
        .collect();
    assert_eq!(types, [("id", "s64"), ("word", "string"), ("x", "f64")]);
    let splits = file["source"]["splits"].as_array().unwrap();
    assert!(splits.iter().filter(|s| s["object"] == 0).count() >= 3, "a.csv is cut: {splits:?}");

    let before = s3.bytes_served();
    let mut union = Vec::new();
    let mut read_splits = Vec::new();
    for index in 0..4 {
        let output = run_planned(&spec, &plan, index, 4);
        let output = ok(output, &format!("shard {index}/4"));
        union.extend(rows_of(&output));
        for split in report(&output)["splits"].as_array().unwrap() {
            read_splits.push((split["object"].as_str().unwrap().to_string(), split["start"].as_u64().unwrap()));
        }
    }
    let shards = s3.bytes_served() - before;
    union.sort();
    one.sort();
    assert!(union == one, "the shards' rows differ from one run's ({} rows against {})", union.len(), one.len());
    let distinct: std::collections::BTreeSet<_> = read_splits.iter().collect();
    assert_eq!(distinct.len(), read_splits.len(), "a split was read twice: {read_splits:?}");
    assert_eq!(read_splits.len(), splits.len(), "every split was read");
    eprintln!("input {size} bytes; served to the plan {planning}, to the shards {shards}");
    let ratio = |bytes: u64| bytes as f64 / size as f64;
    assert!(ratio(shards) <= 1.05, "the shards fetched {shards} bytes of a {size}-byte input ({:.3}x)", ratio(shards));
    assert!(
        ratio(planning + shards) <= 2.05,
        "plan and shards fetched {} bytes of a {size}-byte input ({:.3}x)",
        planning + shards,
        ratio(planning + shards)
    );
}

/// The plan pins every object's version: one overwritten after planning fails the shard that
/// reads it, naming it (exit 1), while a shard that does not read it still runs. A spec changed
/// since, a plan for another number of shards, and a file that is not a plan are refused
/// (exit 2) before anything is read.
#[test]
fn what_changed_since_the_plan_is_refused() {
    let dir = temp();
    let s3 = S3Server::start();
    s3_input(&s3, dir.path());
    let spec = spec(&s3, dir.path(), "spec.toml", STDOUT_SINK);
    let plan = dir.path().join("plan.json");
    make_plan(&spec, 4, &plan);
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    let reads_b = |shard: u64| {
        file["source"]["splits"].as_array().unwrap().iter().any(|s| s["shard"] == shard && s["object"] == 1)
    };
    let b_shard = (0..4).find(|&i| reads_b(i)).expect("a shard reads b.csv") as u32;
    let other = (0..4).find(|&i| !reads_b(i)).expect("a shard does not read b.csv") as u32;

    // Same size, other bytes: only the version tells.
    let b = dir.path().join("b.csv");
    let mut changed = std::fs::read(&b).unwrap();
    changed[20] = if changed[20] == b'a' { b'b' } else { b'a' };
    std::fs::write(&b, changed).unwrap();
    s3.put("batch", "in/b.csv", &b);
    let output = run_planned(&spec, &plan, b_shard, 4);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("s3://batch/in/b.csv"), "names the object: {}", stderr(&output));
    assert!(stderr(&output).contains("changed"), "{}", stderr(&output));
    ok(run_planned(&spec, &plan, other, 4), "a shard that does not read b.csv");

    let output = run_planned(&spec, &plan, 0, 3);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("among 4 shards, not 3"), "{}", stderr(&output));

    let mut text = std::fs::read_to_string(&spec).unwrap();
    text.push_str("\n[pipeline]\nbatch_rows = 1000\n");
    std::fs::write(&spec, text).unwrap();
    let output = run_planned(&spec, &plan, 0, 4);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("made from another spec"), "{}", stderr(&output));

    std::fs::write(&plan, "{\"version\": 99}").unwrap();
    let output = run_planned(&spec, &plan, 0, 4);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("not a plan file of version 1"), "{}", stderr(&output));
    let output = run_planned(&spec, &dir.path().join("missing.json"), 0, 4);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--plan") && stderr(&output).contains("missing.json"), "{}", stderr(&output));
}

/// A Parquet input from a plan: the plan holds its row groups and column types; the shards
/// together print one run's rows.
#[test]
fn parquet_shards_from_a_plan() {
    let dir = temp();
    let s3 = S3Server::start();
    s3.bucket("batch");
    let csv = dir.path().join("rows.csv");
    std::fs::write(&csv, csv_rows(5000, 0, 7)).unwrap();
    let parquet = dir.path().join("rows.parquet");
    let script = "import sys, pyarrow.csv as c, pyarrow.parquet as pq\n\
                  pq.write_table(c.read_csv(sys.argv[1]), sys.argv[2], row_group_size=500)";
    if !common::services::python_has(&["pyarrow"], "pip install pyarrow (.ci/run installs it)") {
        return;
    }
    let written = std::process::Command::new(common::python()).arg("-c").arg(script).arg(&csv).arg(&parquet).output();
    ok(written.unwrap(), "pyarrow writes the file");
    s3.put("batch", "rows.parquet", &parquet);
    let spec = dir.path().join("parquet.toml");
    let text = format!(
        "{}\n[source]\nkind = \"parquet\"\nconfig = {{ url = \"s3://batch/rows.parquet\" }}\n\n{STDOUT_SINK}",
        s3.spec_table()
    );
    std::fs::write(&spec, text).unwrap();
    let mut one = rows_of(&ok(runner().args(["run", "--quiet"]).arg(&spec).output().unwrap(), "one run"));
    let plan = dir.path().join("plan.json");
    make_plan(&spec, 3, &plan);
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    assert_eq!(file["source"]["splits"].as_array().unwrap().len(), 10, "{file}");
    let mut union = Vec::new();
    for index in 0..3 {
        union.extend(rows_of(&ok(run_planned(&spec, &plan, index, 3), &format!("shard {index}/3"))));
    }
    union.sort();
    one.sort();
    assert_eq!(union.len(), 5000);
    assert!(union == one, "the shards' rows differ from one run's");
}

/// `runner lookup --plan` over a 1M-row S3 input keys a row with the plan's column types: no
/// byte of the input is fetched (without the plan, the source's first rows are).
#[test]
fn lookup_from_a_plan_reads_no_rows() {
    let Some(redis) = RedisServer::start() else {
        return common::skip("redis-server", "apt-get install redis-server");
    };
    let dir = temp();
    let s3 = S3Server::start();
    s3.bucket("batch");
    let path = dir.path().join("a.csv");
    std::fs::write(&path, csv_rows(1_000_000, 0, 1)).unwrap();
    s3.put("batch", "in/a.csv", &path);
    let sink = format!(
        "[[transform]]\nname = \"key\"\nkind = \"row-key\"\nconfig = {{ columns = [\"id\", \"x\"] }}\n\n\
         [sink]\nkind = \"redis\"\nconfig = {{ url = \"{}\", key = \"key\", value = \"word\" }}\n",
        redis.url()
    );
    let spec = spec(&s3, dir.path(), "lookup.toml", &sink);
    ok(runner().args(["run", "--quiet"]).arg(&spec).output().unwrap(), "the run");
    let plan = dir.path().join("plan.json");
    make_plan(&spec, 1, &plan);
    // Row 7 of a.csv, as the generator made it.
    let row = csv_rows(8, 0, 1).lines().nth(8).unwrap().to_string();
    let fields: Vec<&str> = row.split(',').collect();
    // `x` given as an integer: typed as the plan says (f64), it keys as the run keyed it.
    let x: f64 = fields[2].parse().unwrap();
    let x = if x.fract() == 0.0 { format!("{}", x as i64) } else { fields[2].to_string() };
    let lookup = |plan: Option<&Path>| {
        let mut command = runner();
        command.arg("lookup").arg(&spec).args([fields[0], &x]);
        if let Some(plan) = plan {
            command.arg("--plan").arg(plan);
        }
        let before = s3.bytes_served();
        let output = ok(command.output().unwrap(), "runner lookup");
        (stdout(&output).trim().to_string(), s3.bytes_served() - before)
    };
    let (found, served) = lookup(Some(&plan));
    assert_eq!(found, fields[1], "the stored word of row {row}");
    assert_eq!(served, 0, "lookup --plan fetched {served} bytes of the input");
    let (found, served) = lookup(None);
    assert_eq!(found, fields[1]);
    assert!(served > 0, "without a plan the source's first rows are read");
}

/// A large object (over 16 MiB, locally or in a bucket) is typed in parts read at once, one per
/// core (in a bucket, up to 32 MiB: from memory, fetched once for the typing and the rows): the
/// types are the whole object's, whichever part holds the value that decides them (a float on
/// the last line, a gap in the middle, a missing boolean near the start). With a quoted field
/// past the start, the object is typed in one pass, and the types are the same.
#[test]
fn a_large_object_is_typed_in_parts_as_one_pass_types_it() {
    let dir = temp();
    let s3 = S3Server::start();
    s3.bucket("batch");
    let cases =
        [(false, false, 1_200_000), (true, false, 1_200_000), (false, true, 2_000_000), (false, true, 1_200_000)];
    for (quoted, remote, rows) in cases.into_iter().chain([(true, true, 1_200_000)]) {
        let mut text = String::with_capacity(rows * 20);
        text.push_str("id,x,y,b,w\n");
        for i in 0..rows {
            let x = if i == rows - 1 { "0.5".to_string() } else { (i % 1000).to_string() };
            let y = if i == rows * 3 / 5 { String::new() } else { (i % 77).to_string() };
            let b = if i == rows / 10 {
                ""
            } else if i % 2 == 0 {
                "True"
            } else {
                "False"
            };
            let w = if quoted && i == rows * 4 / 5 { "\"two\nlines\"" } else { "w" };
            text.push_str(&format!("{i},{x},{y},{b},{w}\n"));
        }
        let data = dir.path().join("large.csv");
        std::fs::write(&data, &text).unwrap();
        assert!(text.len() > 16 << 20, "{} bytes", text.len());
        let kept = remote && text.len() <= 32 << 20;
        let spec = dir.path().join("large.toml");
        let (url, table) = match remote {
            true => {
                s3.put("batch", "large.csv", &data);
                ("s3://batch/large.csv", s3.spec_table())
            }
            false => ("large.csv", String::new()),
        };
        let config = format!("{{ url = \"{url}\", split_bytes = 0 }}");
        let source = format!("[source]\nkind = \"csv\"\nconfig = {config}\n\n[sink]\nkind = \"discard\"\n");
        std::fs::write(&spec, format!("{table}\n{source}")).unwrap();
        let plan = dir.path().join("large.plan");
        make_plan(&spec, 2, &plan);
        let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
        let types: Vec<(String, String)> = file["source"]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap().to_string(), c["read"].as_str().unwrap().to_string()))
            .collect();
        let expected = [("id", "s64"), ("x", "f64"), ("y", "f64"), ("b", "bool-text"), ("w", "string")];
        let expected: Vec<(String, String)> = expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(types, expected, "quoted: {quoted}, in a bucket: {remote}, {rows} rows");
        if kept && !quoted {
            let before = s3.bytes_served();
            ok(runner().args(["run", "--quiet"]).arg(&spec).output().unwrap(), "a run of the kept object");
            let served = s3.bytes_served() - before;
            assert!(served as f64 <= 1.05 * text.len() as f64, "{served} bytes served for {}", text.len());
        }
    }
}
