//! Every invalid spec under `tests/spec/invalid/` fails with exactly the message in its `.err`
//! file, which names the file, line and column. Adding a case is adding two files; run with
//! `BLESS=1` to write the `.err` files of new cases, then read them before committing.

use std::path::Path;

use runner::pipeline::{Options, Plan};
use runner::spec::Spec;

#[test]
fn invalid_specs_fail_with_located_messages() {
    let dir = Path::new("tests/spec/invalid");
    let mut cases: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "the fixtures are missing");
    let mut failures = Vec::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for case in cases {
        // What `runner validate` checks: the plan, then the columns against the source's header.
        let error = match Spec::load(&case).and_then(|spec| Plan::new(spec, &Options::default())) {
            Ok(plan) => match runtime.block_on(plan.check_columns()) {
                Ok(_) => format!("(no error: {} is valid)", case.display()),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        let expected_file = case.with_extension("err");
        if std::env::var_os("BLESS").is_some() && !expected_file.exists() {
            std::fs::write(&expected_file, format!("{error}\n")).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_file).unwrap_or_default();
        if expected.trim_end() != error {
            failures.push(format!("{}:\n  expected: {}\n  actual:   {error}", case.display(), expected.trim_end()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A value that came from an environment variable is never echoed in an error: it may be a
/// secret.
#[test]
fn interpolated_values_are_not_echoed() {
    // SAFETY: this test binary reads no other environment variable concurrently.
    unsafe { std::env::set_var("RUNNER_TEST_SECRET", "hunter2") };
    let text = "[source]\nkind = \"csv\"\nconfig = { url = \"x.csv\", delimiter = \"${RUNNER_TEST_SECRET}\" }\n\n\
                [sink]\nkind = \"csv\"\nconfig = { url = \"-\" }\n";
    let spec = Spec::parse(Path::new("secret.toml"), text).unwrap();
    let error = Plan::new(spec, &Options::default()).err().expect("a 7-character delimiter is invalid").to_string();
    assert!(!error.contains("hunter2"), "{error}");
    assert_eq!(
        error,
        "secret.toml:3:39: step `source`: `source.config.delimiter`: invalid value (taken from an environment variable, not shown)"
    );
}

/// Every pipeline shipped in `pipelines/` parses.
#[test]
fn shipped_pipelines_parse() {
    for entry in std::fs::read_dir("../pipelines").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Spec::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
