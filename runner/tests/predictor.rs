//! The predictor plugin, end to end through the `runner` binary: Iris scored exactly as XGBoost
//! scores it, from XGBoost's own JSON model and from its ONNX export, XGBoost JSON models of
//! every supported objective equal to XGBoost's `predict_proba`, our tree engine equal to
//! tract's own, models swapped by editing TOML only, and bad models refused with the step and
//! the asset named.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{plugin_dir, plugins, root, run, stderr, stdout, temp};

/// A CSV table: header and rows (no quoted fields in these files).
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn parse(text: &str) -> Table {
        let mut lines = text.lines().map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>());
        let header = lines.next().expect("a header row");
        Table { header, rows: lines.collect() }
    }

    fn read(path: &Path) -> Table {
        Table::parse(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    fn column(&self, name: &str) -> Vec<&str> {
        let i = self
            .header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.header));
        self.rows.iter().map(|r| r[i].as_str()).collect()
    }

    fn floats(&self, name: &str) -> Vec<f64> {
        self.column(name).iter().map(|v| v.parse().unwrap()).collect()
    }
}

/// Compiles the predictor into the shared cache once, so parallel tests do not all pay
/// Cranelift at the same time.
fn warm() {
    static WARM: OnceLock<()> = OnceLock::new();
    WARM.get_or_init(|| {
        plugins();
        let output = run(&["validate", "pipelines/iris-local.toml"]);
        assert!(output.status.success(), "{}", stderr(&output));
    });
}

/// Writes a spec that scores `data` with `model`, `config` being the predictor's extra config
/// lines, and returns its path.
fn spec(dir: &Path, data: &Path, model: &Path, config: &str) -> PathBuf {
    let text = format!(
        "[pipeline]\nplugin_dir = \"{plugins}\"\n\n\
         [source]\nkind = \"csv\"\nconfig = {{ url = \"{data}\" }}\n\n\
         [[transform]]\nname = \"score\"\nplugin = \"onnx-predictor\"\nassets = {{ model = \"{model}\" }}\n\
         [transform.config]\n{config}\n\n\
         [sink]\nkind = \"csv\"\nconfig = {{ url = \"-\" }}\n",
        plugins = plugin_dir().display(),
        data = data.display(),
        model = model.display(),
    );
    let path = dir.join("spec.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs a spec and returns its CSV output.
fn score(spec: &Path) -> Table {
    warm();
    let output = run(&["run", "--quiet", spec.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    Table::parse(&stdout(&output))
}

const IRIS_FEATURES: &str = r#"features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]"#;
const IRIS_CLASSES: &str = r#"classes = ["setosa", "versicolor", "virginica"]"#;

fn iris(file: &str) -> PathBuf {
    root().join("models/iris").join(file)
}

fn trees(file: &str) -> PathBuf {
    root().join("models/trees").join(file)
}

fn xgb(file: &str) -> PathBuf {
    root().join("models/xgboost").join(file)
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tolerance: f64) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (row, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tolerance, "{what}, row {row}: {g} vs {w} (tolerance {tolerance})");
    }
}

/// All 150 Iris labels equal XGBoost's own predictions, and the probabilities are within 1e-5.
#[test]
fn iris_scores_match_xgboost() {
    let dir = temp();
    let config = format!("{IRIS_FEATURES}\n{IRIS_CLASSES}\nprobabilities = true");
    let out = score(&spec(dir.path(), &iris("iris.csv"), &iris("model.onnx"), &config));
    let expected = Table::read(&iris("expected.csv"));
    assert_eq!(out.rows.len(), 150);
    assert_eq!(out.column("label"), expected.column("class"));
    for class in ["setosa", "versicolor", "virginica"] {
        let p = format!("p_{class}");
        assert_close(&p, &out.floats(&p), &expected.floats(&p), 1e-5);
    }
    // The input columns pass through untouched.
    assert_eq!(out.column("sepal_length"), Table::read(&iris("iris.csv")).column("sepal_length"));
}

/// XGBoost's own JSON model (what the original flow loads), read without any ONNX export: all
/// 150 Iris labels are XGBoost's, the probabilities within 1e-6 of its `predict_proba`.
#[test]
fn iris_from_xgboost_json_matches_xgboost() {
    let dir = temp();
    let config = format!("{IRIS_FEATURES}\n{IRIS_CLASSES}\nprobabilities = true");
    let out = score(&spec(dir.path(), &iris("iris.csv"), &iris("model.json"), &config));
    let expected = Table::read(&iris("expected.csv"));
    assert_eq!(out.column("label"), expected.column("class"));
    for class in ["setosa", "versicolor", "virginica"] {
        let p = format!("p_{class}");
        assert_close(&p, &out.floats(&p), &expected.floats(&p), 1e-6);
    }
}

/// XGBoost JSON models of each supported objective, trained with missing values and scored on
/// 500 rows with missing values (models/xgboost/make.py): labels equal XGBoost's `predict`,
/// probabilities within 1e-6 of its `predict_proba` (for `binary:logistic`, `[1 - p, p]`), and
/// regression values within 1e-6 relative to its `predict`.
#[test]
fn xgboost_json_models_match_xgboost() {
    let dir = temp();
    let features = format!("features = [{}]", (0..8).map(|i| format!("\"f{i}\"")).collect::<Vec<_>>().join(", "));
    let expected = Table::read(&xgb("expected.csv"));
    for (model, classes) in [("softprob", 4), ("softmax", 3), ("binary", 2)] {
        let config = format!("{features}\nprobabilities = true");
        let out = score(&spec(dir.path(), &xgb("rows.csv"), &xgb(&format!("{model}.json")), &config));
        assert_eq!(out.rows.len(), 500);
        assert_eq!(out.column("label"), expected.column(&format!("{model}_label")), "{model}: labels");
        for c in 0..classes {
            let want = expected.floats(&format!("{model}_p{c}"));
            assert_close(&format!("{model} p_{c}"), &out.floats(&format!("p_{c}")), &want, 1e-6);
        }
    }
    let out =
        score(&spec(dir.path(), &xgb("rows.csv"), &xgb("regression.json"), &format!("{features}\noutput = \"y\"")));
    for (row, (g, w)) in out.floats("y").iter().zip(expected.floats("regression_value")).enumerate() {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "regression row {row}: {g} vs {w}");
    }
}

/// An XGBoost objective the predictor does not implement is refused when the step opens, with
/// the objective named: a spec error.
#[test]
fn an_unsupported_xgboost_objective_is_refused() {
    warm();
    let dir = temp();
    let features = format!("features = [{}]", (0..8).map(|i| format!("\"f{i}\"")).collect::<Vec<_>>().join(", "));
    let spec = spec(dir.path(), &xgb("rows.csv"), &xgb("poisson.json"), &features);
    let output = run(&["validate", spec.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("objective `count:poisson` is not supported (supported: multi:softprob"), "{err}");
}

/// Our tree engine and tract's own `TreeEnsembleClassifier` agree: labels equal, probabilities
/// within 1e-6, on Iris and on a deep XGBoost model whose rows take missing-value branches.
#[test]
fn fast_tree_engine_matches_tracts_own_op() {
    let dir = temp();
    let deep_features = format!("features = [{}]", (0..10).map(|i| format!("\"f{i}\"")).collect::<Vec<_>>().join(", "));
    let cases = [
        (iris("iris.csv"), iris("model.onnx"), IRIS_FEATURES.to_string(), 3),
        (trees("rows.csv"), trees("deep-classifier.onnx"), deep_features, 4),
    ];
    for (data, model, features, classes) in cases {
        let run_with = |engine: &str| {
            let config = format!("{features}\nprobabilities = true\ntree_engine = \"{engine}\"");
            score(&spec(dir.path(), &data, &model, &config))
        };
        let (fast, tract) = (run_with("fast"), run_with("tract"));
        let what = model.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(fast.column("label"), tract.column("label"), "{what}: labels");
        for c in 0..classes {
            let p = format!("p_{c}");
            assert_close(&format!("{what} {p}"), &fast.floats(&p), &tract.floats(&p), 1e-6);
        }
    }
}

/// The deep classifier (240 depth-8 trees, missing values) agrees with XGBoost itself.
#[test]
fn deep_classifier_matches_xgboost() {
    let dir = temp();
    let features = format!("features = [{}]", (0..10).map(|i| format!("\"f{i}\"")).collect::<Vec<_>>().join(", "));
    let out = score(&spec(
        dir.path(),
        &trees("rows.csv"),
        &trees("deep-classifier.onnx"),
        &format!("{features}\nprobabilities = true"),
    ));
    let expected = Table::read(&trees("expected-classifier.csv"));
    assert_eq!(out.column("label"), expected.column("label"));
    for c in 0..4 {
        let p = format!("p_{c}");
        assert_close(&p, &out.floats(&p), &expected.floats(&p), 1e-5);
    }
}

/// `TreeEnsembleRegressor`, which tract alone cannot run: an XGBoost regressor (missing values)
/// matches XGBoost, a scikit-learn random forest matches onnxruntime.
#[test]
fn tree_regressors_match_their_reference() {
    let dir = temp();
    let features = format!("features = [{}]", (0..10).map(|i| format!("\"f{i}\"")).collect::<Vec<_>>().join(", "));
    let expected = Table::read(&trees("expected-regressors.csv"));
    for (model, reference) in [("deep-regressor.onnx", "xgboost"), ("forest-regressor.onnx", "forest")] {
        let out = score(&spec(dir.path(), &trees("rows.csv"), &trees(model), &format!("{features}\noutput = \"y\"")));
        // f32 sums of ~80 leaves: agree to a few units in the 6th significant digit.
        let want = expected.floats(reference);
        let tolerance: Vec<f64> = want.iter().map(|w| 1e-4 * w.abs().max(1.0)).collect();
        for (row, (g, w)) in out.floats("y").iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= tolerance[row], "{model} row {row}: {g} vs {w}");
        }
    }
}

/// One built binary runs the XGBoost pipeline and the logistic-regression pipeline back to back,
/// each with its expected labels: only the TOML differs.
#[test]
fn models_swap_by_editing_the_spec_only() {
    warm();
    for (spec, expected) in
        [("pipelines/iris-local.toml", "expected.csv"), ("pipelines/iris-logreg.toml", "expected-logreg.csv")]
    {
        let output = run(&["run", spec]);
        assert!(output.status.success(), "{spec}: {}", stderr(&output));
        let out = Table::parse(&stdout(&output));
        assert_eq!(out.column("label"), Table::read(&iris(expected)).column("class"), "{spec}");
        assert!(stderr(&output).contains("150 rows read, 150 rows written"), "{}", stderr(&output));
    }
}

/// A model that is not ONNX, one whose input width does not match the configured columns, and a
/// missing model file each fail with the step, the asset and its location named.
#[test]
fn bad_models_fail_clearly() {
    let dir = temp();
    // A model the plugin refuses is a spec error (exit 2), located at the step's config; a model
    // that cannot be read fails the run (exit 1).
    let cases = [
        (iris("iris.csv"), IRIS_FEATURES.to_string(), "asset `model`: not a valid ONNX model", 2),
        (
            iris("model.onnx"),
            r#"features = ["sepal_length", "sepal_width", "petal_length"]"#.to_string(),
            "asset `model`: the model takes 4 input features, but 3 columns are configured",
            2,
        ),
        (iris("no-such-model.onnx"), IRIS_FEATURES.to_string(), "asset `model` (", 1),
    ];
    warm();
    for (model, config, message, status) in cases {
        let output = run(&["run", spec(dir.path(), &iris("iris.csv"), &model, &config).to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(status), "{}", stderr(&output));
        let err = stderr(&output);
        assert!(err.contains("step `score`: ") && err.contains(message), "{err}");
        assert!(err.contains(&model.display().to_string()), "names the model's location: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A class the config has no name for fails its row, naming the class and the row (the labels
/// are dictionary keys into `classes`, so a key past its end must never reach the host).
#[test]
fn a_class_without_a_name_fails_its_row() {
    let dir = temp();
    let config = format!("{IRIS_FEATURES}\nclasses = [\"setosa\", \"versicolor\"]");
    warm();
    let output = run(&["run", spec(dir.path(), &iris("iris.csv"), &iris("model.onnx"), &config).to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    // XGBoost first predicts virginica (class 2) at row 100 (models/iris/expected.csv).
    let message = "failed at row 100 of the batch: the model predicted class 2, but `classes` names only 2";
    assert!(err.contains("error: step `score`: plugin `onnx_predictor.wasm` ") && err.contains(message), "{err}");
}

/// The summary says whether the compiled plugin came from the cache.
#[test]
fn summary_reports_cache_hits_and_misses() {
    let cache = temp();
    plugins();
    let run_once = || {
        let output = common::runner()
            .env("RUNNER_CACHE_DIR", cache.path())
            .args(["run", "pipelines/petals.toml"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        stderr(&output)
    };
    assert!(run_once().contains("(cache miss, loaded in"));
    assert!(run_once().contains("(cache hit, loaded in"));
    let output = run(&["run", "--no-cache", "pipelines/petals.toml"]);
    assert!(stderr(&output).contains("(cache off, loaded in"), "{}", stderr(&output));
}
