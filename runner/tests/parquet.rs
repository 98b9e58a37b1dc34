//! Parquet in and out, against real parts: files written by pyarrow (tests/data/parquet_files.py),
//! the tests' S3 server, redis-server, and the original flow's own key rule run by pandas over
//! `pd.read_parquet` (tests/data/parquet_flow.py, bench/reference/seed_flow.py).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::services::{RedisServer, S3_ACCESS_KEY, S3_SECRET_KEY, S3Server, python_has};
use common::{root, runner, stderr, stdout};

/// The key columns of each generated case (every column but `label`), in file order.
const CASES: &[(&str, &[&str])] = &[
    ("ints.parquet", &["n", "i32"]),
    ("ints_nonull.parquet", &["a", "u8", "i16"]),
    ("floats.parquet", &["f", "f32"]),
    ("bools.parquet", &["b", "bb"]),
    ("strings.parquet", &["s", "ls", "k"]),
    ("dictionary.parquet", &["d", "x"]),
    ("mixed.parquet", MIXED),
    ("prefix/", MIXED),
];

const MIXED: &[&str] = &["n", "i32", "f", "f32", "b", "bb", "s", "ls", "d"];

/// The generated Parquet files, in a temporary directory; `None` (the test skipped) without
/// pyarrow and pandas.
fn files() -> Option<tempfile::TempDir> {
    if !python_has(&["pyarrow", "pandas", "redis"], common::PIP_INSTALL) {
        return None;
    }
    let dir = common::temp();
    let made = Command::new(common::python())
        .arg(root().join("runner/tests/data/parquet_files.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "parquet_files.py: {}", stderr(&made));
    Some(dir)
}

/// An S3 server whose bucket `cases` holds the generated files under the same names.
fn bucket(files: &Path) -> S3Server {
    let s3 = S3Server::start();
    s3.bucket("cases");
    put_tree(&s3, files, files);
    s3
}

fn put_tree(s3: &S3Server, base: &Path, dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            put_tree(s3, base, &path);
        } else {
            let key = path.strip_prefix(base).unwrap().to_str().unwrap().to_string();
            s3.put("cases", &key, &path);
        }
    }
}

/// A spec in `dir` reading `url` as Parquet, keying `columns`, and SETting key → label in `redis`.
fn keyed_spec(dir: &Path, name: &str, s3: &S3Server, url: &str, columns: &[&str], redis: &str) -> PathBuf {
    let columns: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
    let text = format!(
        "{}\n[source]\nkind = \"parquet\"\nconfig = {{ url = \"{url}\" }}\n\n[[transform]]\nkind = \"row-key\"\n\
         config = {{ columns = [{}] }}\n\n[sink]\nkind = \"redis\"\nconfig = {{ url = \"{redis}\", key = \"key\", \
         value = \"label\" }}\n",
        s3.spec_table(),
        columns.join(", ")
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn flush(redis: &RedisServer) {
    redis::cmd("FLUSHALL").query::<()>(&mut redis.connection()).unwrap();
}

fn run(command: &mut Command) -> Output {
    command.output().expect("start runner")
}

/// The original flow's keys over every kind of Parquet column pandas types its own way
/// (integers with nulls as float64, booleans with nulls as objects of None, strings, categories,
/// float32, unsigned and narrow integers), over several row groups, snappy and zstd, and a
/// prefix of three objects (only one of which has nulls in its integer column): Redis holds the
/// same keys and labels after the runner as after pandas.
#[test]
fn keys_over_parquet_are_the_original_flows() {
    let Some(files) = files() else { return };
    let Some(redis) = RedisServer::start() else { return };
    let s3 = bucket(files.path());
    for (case, columns) in CASES {
        flush(&redis);
        let flow = Command::new(common::python())
            .arg(root().join("runner/tests/data/parquet_flow.py"))
            .arg(files.path().join(case))
            .arg(format!("redis://127.0.0.1:{}/1", redis.port))
            .output()
            .unwrap();
        assert!(flow.status.success(), "{case}: parquet_flow.py: {}", stderr(&flow));

        let url = format!("s3://cases/{case}");
        let spec = keyed_spec(files.path(), "keys", &s3, &url, columns, &format!("redis://127.0.0.1:{}/2", redis.port));
        let output = run(runner().arg("run").arg(&spec));
        assert!(output.status.success(), "{case}: {}", stderr(&output));

        let (theirs, ours) = (redis.contents_of(1), redis.contents_of(2));
        // Booleans make few distinct rows (3 x 2); the others, most of their 60.
        assert!(theirs.len() >= if *case == "bools.parquet" { 6 } else { 40 }, "{case}: {} keys", theirs.len());
        if *case == "bools.parquet" {
            // A missing boolean is pandas's None: the text `None`, where CSV's would be `nan`.
            use sha2::Digest;
            let key = format!("{:x}", sha2::Sha256::digest(b"None False"));
            assert!(theirs.iter().any(|(k, _)| *k == key), "{case}: no row keyed `None False`");
        }
        assert!(
            theirs == ours,
            "{case}: {} keys from pandas, {} from the runner; first differences: {:?}",
            theirs.len(),
            ours.len(),
            theirs.iter().zip(&ours).filter(|(a, b)| a != b).take(3).collect::<Vec<_>>()
        );
    }
}

/// The flagship job over Parquet: the original flow changed only to `pd.read_parquet`, the
/// runner on pipelines/iris-parquet.toml, and the runner on the same rows as CSV
/// (pipelines/iris.toml) leave the same Redis, the flow's own; the committed
/// models/iris/iris.parquet holds exactly iris.csv's rows.
#[test]
fn iris_as_parquet_as_csv_and_in_the_original_flow_agree() {
    if !python_has(&["pyarrow", "pandas", "xgboost", "sklearn", "redis", "boto3"], common::PIP_INSTALL) {
        return;
    }
    let same = Command::new(common::python())
        .args(["-c", "import sys, pyarrow.csv as c, pyarrow.parquet as p; sys.exit(0 if p.read_table(sys.argv[1]).equals(c.read_csv(sys.argv[2])) else 1)"])
        .arg(root().join("models/iris/iris.parquet"))
        .arg(root().join("models/iris/iris.csv"))
        .status()
        .unwrap();
    assert!(same.success(), "models/iris/iris.parquet is not iris.csv: remake it with models/iris/iris_parquet.py");

    let Some(redis) = RedisServer::start() else { return };
    let s3 = S3Server::start();
    s3.bucket("batch");
    let models = root().join("models/iris");
    s3.put("batch", "data/iris.csv", &models.join("iris.csv"));
    s3.put("batch", "data/iris.parquet", &models.join("iris.parquet"));
    s3.put("batch", "artifact/model.json", &models.join("model.json"));

    // The original flow, its one reading line changed to Parquet.
    let flow = std::fs::read_to_string(root().join("bench/reference/seed_flow.py")).unwrap();
    let reading = "pd.read_csv(io.BytesIO(body))";
    assert_eq!(flow.matches(reading).count(), 1, "the flow reads its data in one place");
    let dir = common::temp();
    let parquet_flow = dir.path().join("seed_flow_parquet.py");
    std::fs::write(&parquet_flow, flow.replace(reading, "pd.read_parquet(io.BytesIO(body))")).unwrap();
    let original = Command::new(common::python())
        .arg(&parquet_flow)
        .args(["--endpoint", &s3.endpoint(), "--bucket", "batch", "--data", "data/iris.parquet", "--redis"])
        .arg(format!("redis://127.0.0.1:{}/1", redis.port))
        .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
        .output()
        .unwrap();
    assert!(original.status.success(), "the original flow on Parquet failed: {}", stderr(&original));

    for (db, spec) in [(2, "pipelines/iris-parquet.toml"), (3, "pipelines/iris.toml")] {
        let output = run(s3.flagship(&format!("redis://127.0.0.1:{}/{db}", redis.port)).args(["run", spec]));
        assert!(output.status.success(), "{spec}: {}", stderr(&output));
        assert!(stderr(&output).contains("150 rows read, 150 rows written"), "{spec}: {}", stderr(&output));
    }
    let flows = redis.contents_of(1);
    assert_eq!(flows.len(), 149, "two Iris rows are identical, so they share a key");
    assert_eq!(redis.contents_of(2), flows, "the runner on Parquet");
    assert_eq!(redis.contents_of(3), flows, "the runner on CSV");

    let lookup = ["lookup", "pipelines/iris-parquet.toml", "5.1", "3.5", "1.4", "0.2"];
    let output = run(s3.flagship(&format!("redis://127.0.0.1:{}/2", redis.port)).args(lookup));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "setosa");
}

/// Row groups are the splits: for 1, 2, 3 and 7 shards over a file of 40 row groups and over a
/// prefix of three objects, the shards' row groups (from their JSON reports) are disjoint and
/// cover the input, and their union in Redis equals one run; `runner plan` shows them.
#[test]
fn shards_divide_the_row_groups() {
    let Some(files) = files() else { return };
    let Some(redis) = RedisServer::start() else { return };
    let s3 = bucket(files.path());
    for (input, groups) in [("big.parquet", 40), ("prefix/", 12)] {
        let url = format!("s3://cases/{input}");
        let one = keyed_spec(files.path(), "one", &s3, &url, MIXED, &format!("redis://127.0.0.1:{}/1", redis.port));
        flush(&redis);
        assert!(run(runner().args(["run", "--quiet"]).arg(&one)).status.success());
        let whole = redis.contents_of(1);
        assert!(whole.len() > 100, "{input}: {} keys", whole.len());
        for count in [1u32, 2, 3, 7] {
            let db = 1 + count;
            let spec =
                keyed_spec(files.path(), "shards", &s3, &url, MIXED, &format!("redis://127.0.0.1:{}/{db}", redis.port));
            let mut seen = BTreeSet::new();
            let mut total = 0;
            for index in 0..count {
                let shard = format!("{index}/{count}");
                let output = run(runner().args(["run", "--shard", &shard, "--report", "json"]).arg(&spec));
                assert!(output.status.success(), "{input} {shard}: {}", stderr(&output));
                let report: serde_json::Value = serde_json::from_str(stderr(&output).lines().last().unwrap()).unwrap();
                for split in report["splits"].as_array().unwrap() {
                    let group = (split["object"].as_str().unwrap().to_string(), split["row_group"].as_u64().unwrap());
                    assert!(seen.insert(group.clone()), "{input}: {group:?} read by two shards");
                    total += 1;
                }
            }
            assert_eq!(total, groups, "{input}, {count} shards: every row group read once");
            assert_eq!(redis.contents_of(db), whole, "{input}, {count} shards: the union is one run");
        }
    }
    let spec = keyed_spec(files.path(), "plan", &s3, "s3://cases/big.parquet", MIXED, "redis://127.0.0.1:1/0");
    let output = run(runner().args(["plan", "--shards", "3"]).arg(&spec));
    assert!(output.status.success(), "{}", stderr(&output));
    let plan = stdout(&output);
    assert!(plan.contains("shard 0/3: 14 splits") || plan.contains("shard 0/3: 13 splits"), "{plan}");
    assert!(plan.contains("row group 39  bytes"), "{plan}");
    assert!(plan.contains("about 100 rows"), "{plan}");
}

/// What is not a good Parquet input fails the run, exit 1, with a message naming the object:
/// a file cut short, one that is not Parquet, one with a corrupt page (its row group named), and
/// a prefix whose objects disagree on the schema; a column the file does not have is refused by
/// `validate`, exit 2.
#[test]
fn bad_parquet_fails_naming_the_object() {
    let Some(files) = files() else { return };
    let s3 = bucket(files.path());
    // The object as messages name it (with the endpoint after it), and what is wrong.
    let cases = [
        (
            "bad/truncated.parquet",
            "s3://cases/bad/truncated.parquet",
            "cannot read its Parquet footer: not a Parquet file",
        ),
        (
            "bad/not-parquet.parquet",
            "s3://cases/bad/not-parquet.parquet",
            "cannot read its Parquet footer: not a Parquet file",
        ),
        ("bad/corrupt.parquet", "s3://cases/bad/corrupt.parquet", ", row group 1: cannot read it"),
        (
            "bad-prefix/",
            "s3://cases/bad-prefix/b.parquet",
            "its schema differs from s3://cases/bad-prefix/a.parquet (at",
        ),
        ("bad-prefix/", "", "the first object under the prefix: column 2 is `n` there, `f` here"),
    ];
    for (input, object, message) in cases {
        let spec = files.path().join("bad.toml");
        let text = format!(
            "{}\n[source]\nkind = \"parquet\"\nconfig = {{ url = \"s3://cases/{input}\" }}\n\n[sink]\nkind = \"discard\"\n",
            s3.spec_table()
        );
        std::fs::write(&spec, text).unwrap();
        let output = run(runner().arg("run").arg(&spec));
        assert_eq!(output.status.code(), Some(1), "{input}: {}", stderr(&output));
        let error = stderr(&output);
        let line = error.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
        assert!(
            line.contains(object) && line.contains(message),
            "{input}: expected `{object}`, `{message}` in:\n{error}"
        );
        assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    }
    let spec = files.path().join("missing.toml");
    let text = format!(
        "{}\n[source]\nkind = \"parquet\"\nconfig = {{ url = \"s3://cases/mixed.parquet\", columns = [\"n\", \"nope\"] }}\n\n\
         [sink]\nkind = \"discard\"\n",
        s3.spec_table()
    );
    std::fs::write(&spec, text).unwrap();
    let output = run(runner().arg("validate").arg(&spec));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("`columns` names `nope`, which is not among the input's columns (label, n, i32"));
}

/// The Parquet sink: the scored Iris rows written locally (zstd, small row groups) and a file
/// of every type written to S3 read back by pyarrow as exactly the rows and types the pipeline
/// produced (the input's columns as the source types them, plus the label); a run that fails
/// leaves no file and no object.
#[test]
fn the_parquet_sink_writes_what_pyarrow_reads_back() {
    let Some(files) = files() else { return };
    let s3 = bucket(files.path());
    s3.bucket("out");
    s3.put("cases", "artifact/model.json", &root().join("models/iris/model.json"));
    let dir = files.path();

    // Iris, scored: the input's columns, then the label.
    let spec = dir.join("scored.toml");
    let text = format!(
        "[pipeline]\nplugin_dir = \"{}\"\n\n{}\n[source]\nkind = \"parquet\"\nconfig = {{ url = \"{}\" }}\n\n\
         [[transform]]\nplugin = \"onnx-predictor\"\nassets = {{ model = \"s3://cases/artifact/model.json\" }}\n\
         config = {{ features = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"], \
         classes = [\"setosa\", \"versicolor\", \"virginica\"] }}\n\n[sink]\nkind = \"parquet\"\n\
         config = {{ url = \"scored.parquet\", compression = \"zstd\", row_group_rows = 64 }}\n",
        common::plugins().display(),
        s3.spec_table(),
        root().join("models/iris/iris.parquet").display()
    );
    std::fs::write(&spec, text).unwrap();
    let output = run(runner().arg("run").arg(&spec));
    assert!(output.status.success(), "{}", stderr(&output));
    let check = r#"
import sys, pyarrow as pa, pyarrow.csv as c, pyarrow.parquet as p
got = p.read_table(sys.argv[1])
meta = p.ParquetFile(sys.argv[1]).metadata
assert meta.num_row_groups == 3, meta.num_row_groups
assert meta.row_group(0).column(0).compression == "ZSTD", meta.row_group(0).column(0).compression
rows = c.read_csv(sys.argv[2])
labels = c.read_csv(sys.argv[3])["class"]
want = rows.append_column("label", labels)
assert got.schema.equals(want.schema), (got.schema, want.schema)
assert got.equals(want), "values differ"
"#;
    let models = root().join("models/iris");
    let read = Command::new(common::python())
        .args(["-c", check])
        .arg(dir.join("scored.parquet"))
        .arg(models.join("iris.csv"))
        .arg(models.join("expected.csv"))
        .output()
        .unwrap();
    assert!(read.status.success(), "pyarrow read back: {}", stderr(&read));

    // Every type, to S3: what the source made of each column, as pandas would type it.
    let spec = dir.join("copy.toml");
    let text = format!(
        "{}\n[source]\nkind = \"parquet\"\nconfig = {{ url = \"s3://cases/mixed.parquet\" }}\n\n[sink]\nkind = \"parquet\"\n\
         config = {{ url = \"s3://out/mixed-{{shard}}.parquet\" }}\n",
        s3.spec_table()
    );
    std::fs::write(&spec, text).unwrap();
    let output = run(runner().arg("run").arg(&spec));
    assert!(output.status.success(), "{}", stderr(&output));
    let written = dir.join("mixed-0.parquet");
    std::fs::write(&written, s3.get("out", "mixed-0.parquet").expect("the object is there")).unwrap();
    let check = r#"
import sys, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as p
src = p.read_table(sys.argv[1])
got = p.read_table(sys.argv[2])
assert p.ParquetFile(sys.argv[2]).metadata.row_group(0).column(0).compression == "SNAPPY"
types = {"n": pa.float64(), "i32": pa.int64(), "f32": pa.float64(), "ls": pa.string(), "d": pa.string()}
want = pa.table({name: pc.cast(src[name], types.get(name, src[name].type)) for name in src.column_names})
assert got.schema.equals(want.schema), (got.schema, want.schema)
for name in want.column_names:
    a, b = got[name].combine_chunks(), want[name].combine_chunks()
    # NaN is not equal to itself: compare where both are valid and not NaN, and the masks.
    assert a.is_null().equals(b.is_null()), name
    if pa.types.is_floating(a.type):
        assert pc.is_nan(a).equals(pc.is_nan(b)), name
        a, b = pc.if_else(pc.is_nan(a), 0.0, a), pc.if_else(pc.is_nan(b), 0.0, b)
    assert a.equals(b), name
"#;
    let read = Command::new(common::python())
        .args(["-c", check])
        .arg(dir.join("mixed.parquet"))
        .arg(&written)
        .output()
        .unwrap();
    assert!(read.status.success(), "pyarrow read back: {}", stderr(&read));
    assert!(s3.upload_parts().is_empty(), "no upload left open: {:?}", s3.upload_parts());

    // A run that fails (a corrupt page in the middle of the input) leaves nothing.
    for (url, sink) in [("failed.parquet", "local"), ("s3://out/failed.parquet", "S3")] {
        let spec = dir.join("broken.toml");
        let text = format!(
            "{}\n[source]\nkind = \"parquet\"\nconfig = {{ url = \"s3://cases/bad/corrupt.parquet\" }}\n\n\
             [sink]\nkind = \"parquet\"\nconfig = {{ url = \"{url}\" }}\n",
            s3.spec_table()
        );
        std::fs::write(&spec, text).unwrap();
        let output = run(runner().arg("run").arg(&spec));
        assert_eq!(output.status.code(), Some(1), "{sink}: {}", stderr(&output));
    }
    assert!(common::files_named(dir, "failed").is_empty(), "{:?}", common::files_named(dir, "failed"));
    assert_eq!(s3.get("out", "failed.parquet"), None);
    assert!(s3.upload_parts().is_empty(), "the upload was aborted: {:?}", s3.upload_parts());
}

/// Bytes fetched, counted by the S3 server: a whole read fetches each byte of the file about
/// once (its row groups, and its footer with the bytes before it that the footer request asks
/// for), and a read of two of its ten columns fetches about a fifth of that: the other column
/// chunks are never requested.
#[test]
fn only_the_columns_read_are_fetched() {
    let Some(files) = files() else { return };
    let s3 = bucket(files.path());
    let size = std::fs::metadata(files.path().join("wide.parquet")).unwrap().len();
    let mut served = Vec::new();
    for columns in ["", ", columns = [\"c0\", \"c9\"]"] {
        let spec = files.path().join("bytes.toml");
        let text = format!(
            "{}\n[source]\nkind = \"parquet\"\nconfig = {{ url = \"s3://cases/wide.parquet\"{columns} }}\n\n\
             [sink]\nkind = \"discard\"\n",
            s3.spec_table()
        );
        std::fs::write(&spec, text).unwrap();
        let before = s3.bytes_served();
        let output = run(runner().arg("run").arg(&spec));
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(stderr(&output).contains("200000 rows read"), "{}", stderr(&output));
        served.push(s3.bytes_served() - before);
    }
    let (all, two) = (served[0], served[1]);
    assert!(all >= size - 64 && all <= size + (64 << 10), "a whole read fetched {all} bytes of a {size}-byte file");
    assert!(two * 4 < all, "two of ten columns fetched {two} bytes, all of them {all}");
}
