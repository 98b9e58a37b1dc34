//! Error policies: bad rows go to the dead letter (or are skipped) while good rows flow on, for
//! built-in steps and plugins alike, and a plugin that traps is replaced and the run goes on.

mod common;

use std::path::Path;

use common::services::RedisServer;
use common::{plugin_dir, plugins, root, run, stderr, temp};

/// The Iris rows with two malformed lines inserted: one with a field missing, one with a word
/// where a number belongs. Returns the file and the two lines' numbers.
fn dirty_iris(dir: &Path) -> (std::path::PathBuf, [usize; 2]) {
    let text = std::fs::read_to_string(root().join("models/iris/iris.csv")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(11, "5.0,3.6,1.4"); // becomes line 12
    lines.insert(31, "5.0,abc,1.4,0.2"); // becomes line 32
    let path = dir.join("dirty.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path, [12, 32])
}

/// A file with known bad rows: exactly those rows end in the dead letter, each with its step
/// and reason (and its line, for source rows), and every good row is in Redis.
#[test]
fn bad_rows_go_to_the_dead_letter_and_good_rows_to_redis() {
    let Some(redis) = RedisServer::start() else { return };
    plugins();
    let dir = temp();
    let (data, bad_lines) = dirty_iris(dir.path());
    let dead = dir.path().join("rejected.jsonl");
    let features = r#"["sepal_length", "sepal_width", "petal_length", "petal_width"]"#;
    let spec = format!(
        r#"[pipeline]
plugin_dir = "{plugins}"

[source]
kind = "csv"
on_error = "dead-letter"
dead_letter = {{ url = "{dead}" }}
config = {{ url = "{data}", columns = {{ sepal_length = "f64", sepal_width = "f64", petal_length = "f64", petal_width = "f64" }} }}

[[transform]]
name = "picky"
plugin = "hostile"
on_error = "dead-letter"
dead_letter = {{ url = "{dead}" }}
config = {{ attack = "row-error", value = "4.3" }}

[[transform]]
kind = "row-key"
config = {{ columns = {features} }}

[[transform]]
name = "score"
plugin = "onnx-predictor"
assets = {{ model = "{model}" }}
config = {{ features = {features}, classes = ["setosa", "versicolor", "virginica"] }}

[sink]
kind = "redis"
config = {{ url = "{redis}", value = "label" }}
"#,
        plugins = plugin_dir().display(),
        dead = dead.display(),
        data = data.display(),
        model = root().join("models/iris/model.onnx").display(),
        redis = redis.url(),
    );
    let path = dir.path().join("spec.toml");
    std::fs::write(&path, spec).unwrap();
    let output = run(&["run", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("150 rows read, 149 rows written"), "{err}");
    assert!(err.lines().any(|l| l.contains("source") && l.contains("(2 rows rejected)")), "{err}");
    assert!(err.lines().any(|l| l.contains("picky") && l.contains("(1 rows rejected)")), "{err}");

    let entries: Vec<serde_json::Value> =
        std::fs::read_to_string(&dead).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries.len(), 3, "{entries:?}");
    let at = |line: usize| format!("{}:{line}", data.display());
    assert_eq!(entries[0]["step"], "source");
    assert_eq!(entries[0]["at"], at(bad_lines[0]));
    assert_eq!(entries[0]["reason"], "found 3 fields, but the header has 4");
    assert_eq!(entries[0]["row"], serde_json::json!(["5.0", "3.6", "1.4"]));
    assert_eq!(entries[1]["at"], at(bad_lines[1]));
    assert_eq!(entries[1]["reason"], "column `sepal_width`: expected a number (f64), found `abc`");
    assert_eq!(entries[1]["row"]["sepal_width"], "abc");
    assert_eq!(entries[2]["step"], "picky");
    assert!(entries[2]["reason"].as_str().unwrap().contains("cannot handle value 4.3"), "{entries:?}");
    assert_eq!(
        entries[2]["row"],
        serde_json::json!({"sepal_length": 4.3, "sepal_width": 3.0, "petal_length": 1.1, "petal_width": 0.1})
    );

    // Every good row's key and label, as the original flow would have written them.
    let expected = std::fs::read_to_string(root().join("models/iris/expected-keys.csv")).unwrap();
    let iris = std::fs::read_to_string(root().join("models/iris/iris.csv")).unwrap();
    let mut want: Vec<(String, String)> = expected
        .lines()
        .skip(1)
        .zip(iris.lines().skip(1))
        .filter(|(_, row)| !row.starts_with("4.3,"))
        .map(|(l, _)| {
            let (k, v) = l.split_once(',').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    want.sort();
    want.dedup();
    assert_eq!(redis.contents(), want);
}

/// With `skip`, a plugin that traps on every batch loses those batches, counted, and is
/// replaced each time; the run succeeds. With `dead-letter` to a Redis list, the rows land there.
#[test]
fn a_trapping_plugin_is_replaced_and_its_batches_rejected() {
    let Some(redis) = RedisServer::start() else { return };
    plugins();
    let dir = temp();
    for (policy, list) in [("skip", None), ("dead-letter", Some("rejected"))] {
        let dead_letter = list
            .map(|l| format!("dead_letter = {{ url = \"{}\", list = \"{l}\" }}\n", redis.url()))
            .unwrap_or_default();
        let spec = format!(
            "[pipeline]\nbatch_rows = 50\nplugin_dir = \"{}\"\n\n[source]\nkind = \"csv\"\nconfig = {{ url = \"{}\" }}\n\n\
             [[transform]]\nname = \"crashy\"\nplugin = \"hostile\"\nworkers = 1\non_error = \"{policy}\"\n{dead_letter}\
             config = {{ attack = \"panic\" }}\n\n[sink]\nkind = \"discard\"\n",
            plugin_dir().display(),
            root().join("models/iris/iris.csv").display(),
        );
        let path = dir.path().join("spec.toml");
        std::fs::write(&path, spec).unwrap();
        let output = run(&["run", path.to_str().unwrap()]);
        let err = stderr(&output);
        assert!(output.status.success(), "{policy}: {err}");
        assert!(err.contains("150 rows read, 0 rows written"), "{err}");
        assert!(err.contains("(150 rows rejected)"), "{err}");
        assert_eq!(err.matches("replacing the plugin instance after a trap").count(), 3, "{err}");
        if let Some(list) = list {
            let entries: Vec<String> =
                redis::cmd("LRANGE").arg(list).arg(0).arg(-1).query(&mut redis.connection()).unwrap();
            assert_eq!(entries.len(), 150);
            let first: serde_json::Value = serde_json::from_str(&entries[0]).unwrap();
            assert_eq!(first["step"], "crashy");
            assert!(first["reason"].as_str().unwrap().contains("crashed (a panic"), "{first}");
        }
    }
}
