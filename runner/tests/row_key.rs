//! Row keys are byte for byte the original Python flow's: the float formatter against Python's
//! own `str()` on thousands of tricky values, and whole Iris keys against the flow's keys.

mod common;

use common::python_float;
use common::{plugin_dir, root, run, stderr, stdout, temp};

/// `tests/data/python_floats.txt` holds `<bits> <str(float)>` lines printed by CPython.
#[test]
fn float_text_matches_python_on_tricky_values() {
    let fixture = std::fs::read_to_string("tests/data/python_floats.txt").unwrap();
    let mut checked = 0;
    for line in fixture.lines() {
        let (bits, python) = line.split_once(' ').unwrap();
        let x = f64::from_bits(u64::from_str_radix(bits, 16).unwrap());
        assert_eq!(python_float(x), python, "bits {bits}");
        checked += 1;
    }
    assert!(checked > 8000, "the fixture is incomplete: {checked} values");
}

/// The row-key step over the Iris features gives the original flow's key for every row
/// (`models/iris/expected-keys.csv`, computed by the flow's own code), next to the predictor's
/// label: the pairs the Redis sink writes.
#[test]
fn iris_keys_match_the_original_flow() {
    common::plugins();
    let dir = temp();
    let spec = dir.path().join("keys.toml");
    std::fs::write(
        &spec,
        format!(
            "[pipeline]\nplugin_dir = \"{plugins}\"\n\n[source]\nkind = \"csv\"\nconfig = {{ url = \"{root}/models/iris/iris.csv\" }}\n\n\
             [[transform]]\nkind = \"row-key\"\n\n\
             [[transform]]\nplugin = \"onnx-predictor\"\nassets = {{ model = \"{root}/models/iris/model.onnx\" }}\n\
             config = {{ features = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"], classes = [\"setosa\", \"versicolor\", \"virginica\"] }}\n\n\
             [sink]\nkind = \"csv\"\nconfig = {{ url = \"-\" }}\n",
            plugins = plugin_dir().display(),
            root = root().display(),
        ),
    )
    .unwrap();
    let output = run(&["run", "--quiet", spec.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let got: Vec<String> = stdout(&output)
        .lines()
        .skip(1)
        .map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            format!("{},{}", fields[4], fields[5]) // key, label
        })
        .collect();
    let expected = std::fs::read_to_string(root().join("models/iris/expected-keys.csv")).unwrap();
    let expected: Vec<&str> = expected.lines().skip(1).collect();
    assert_eq!(got.len(), 150);
    assert_eq!(got, expected);
}
