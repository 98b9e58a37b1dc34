//! Property tests (fuzzing with proptest) for the two parsers that take outside input: the spec
//! parser and the CSV reader. Whatever the input, they return a value or an error that names
//! its place; they never panic. Each property runs 256 cases in the test suite
//! (`PROPTEST_CASES` raises it: `PROPTEST_CASES=20000 cargo test -p runner --test fuzz`); an
//! input that fails is saved under `tests/fuzz.proptest-regressions` and replayed first ever
//! after.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use runner::builtin::csv_source::{CsvSource, CsvSourceConfig, SourceContext};
use runner::object_url::ObjectUrl;
use runner::spec::S3Options;
use runner::spec::Spec;
use runner::step::Progress;
use runner::step::Source;
use runner::step::{Policy, Shard};

const VALID: &str = r#"[pipeline]
name = "p"
batch_rows = 10

[source]
kind = "csv"
config = { url = "data.csv", columns = { a = "f64" } }

[[transform]]
kind = "row-key"
config = { columns = ["a"], prefix = "x:" }

[sink]
kind = "jsonl"
config = { url = "-" }
"#;

/// Pieces TOML is made of, to build inputs that get past the tokenizer more often than noise.
fn toml_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[source]\n".to_string()),
        Just("[[transform]]\n".to_string()),
        Just("[sink]\n".to_string()),
        Just("[pipeline]\n".to_string()),
        Just("[s3]\n".to_string()),
        Just("kind = \"csv\"\n".to_string()),
        Just("plugin = \"x.wasm\"\n".to_string()),
        Just("config = { url = \"${HOME}\" }\n".to_string()),
        Just("workers = 0\n".to_string()),
        Just("limits = { memory_mb = -1 }\n".to_string()),
        Just("on_error = \"skip\"\n".to_string()),
        Just("batch_rows = 18446744073709551615\n".to_string()),
        "[a-z_]{1,8} = [0-9]{1,3}\n",
        "[a-z_]{1,8} = \"[^\"\\n]{0,12}\"\n",
        "[ -~\\n]{0,20}",
    ]
}

proptest! {
    /// Any text: a spec or a located error, never a panic.
    #[test]
    fn spec_parser_never_panics_on_text(text in "\\PC{0,400}") {
        if let Err(e) = Spec::parse(Path::new("fuzz.toml"), &text) {
            prop_assert!(e.to_string().starts_with("fuzz.toml:"));
        }
    }

    /// Specs assembled from TOML pieces, and a valid spec with bytes changed.
    #[test]
    fn spec_parser_never_panics_on_near_specs(pieces in prop::collection::vec(toml_piece(), 0..24),
                                              cut in 0..VALID.len(), insert in "[ -~\\n]{0,6}") {
        let text: String = pieces.concat();
        let _ = Spec::parse(Path::new("fuzz.toml"), &text);
        let mut mutated = VALID.to_string();
        if mutated.is_char_boundary(cut) {
            mutated.insert_str(cut, &insert);
        }
        if let Ok(spec) = Spec::parse(Path::new("fuzz.toml"), &mutated) {
            for step in spec.steps() {
                let _ = spec.config_json(step);
                let _ = spec.assets(step);
                let _ = spec.sandbox(step);
                let _ = spec.dead_letter(step);
            }
            let _ = spec.s3();
        }
    }

    /// Any bytes as a CSV object: typed batches whose columns agree, or an error that names the
    /// object and the line; never a panic.
    #[test]
    fn csv_reader_never_panics(body in csv_like(), batch_rows in 1usize..6, declare in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.csv");
        std::fs::write(&path, &body).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        match runtime.block_on(read_all(&path, dir.path(), batch_rows, declare)) {
            Ok(sizes) => prop_assert!(sizes.iter().all(|&rows| rows <= batch_rows), "{sizes:?}"),
            Err(e) => {
                let message = format!("{e:#}");
                // `columns` declares `a`; a body without such a header is refused before any line.
                let located = message.contains(&format!("{}:", path.display())) || message.contains("declares `a`");
                prop_assert!(located, "unlocated error: {message}");
            }
        }
    }
}

/// Reads the whole file with the CSV source; the sizes of the batches it gave.
async fn read_all(path: &Path, dir: &Path, batch_rows: usize, declare: bool) -> anyhow::Result<Vec<usize>> {
    let mut columns = std::collections::BTreeMap::new();
    if declare {
        columns.insert("a".to_string(), runner::batch::ColumnType::F64);
    }
    let config = CsvSourceConfig { url: path.display().to_string(), delimiter: ',', columns, split_bytes: 0 };
    let url = ObjectUrl::parse(&config.url, dir, &S3Options::default())?;
    let context =
        SourceContext { config, batch_rows, step: "source".into(), policy: Policy::default(), shard: Shard::default() };
    let mut source = CsvSource::open(context, url, None, Arc::new(Progress::default())).await?;
    let mut sizes = Vec::new();
    while let Some(batch) = source.next_batch().await? {
        sizes.push(batch.rows());
    }
    Ok(sizes)
}
/// CSV-ish bytes: a header, then lines of short fields (numbers, words, quotes, blanks), with
/// the odd stray byte.
fn csv_like() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        "-?[0-9]{1,4}(\\.[0-9]{1,3})?",
        "[a-z]{0,5}",
        Just(String::new()),
        Just("\"q,uoted\"".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("true".to_string()),
        "\"[^\"]{0,4}",
    ];
    let line = prop::collection::vec(field, 0..5).prop_map(|f| f.join(","));
    let header = prop_oneof![Just("a,b,c".to_string()), Just("a,a".to_string()), Just(String::new()), "[a-c,]{0,6}"];
    (header, prop::collection::vec(line, 0..20), prop::collection::vec(any::<u8>(), 0..3)).prop_map(
        |(header, lines, noise)| {
            let mut body = format!("{header}\n{}\n", lines.join("\n")).into_bytes();
            body.extend(noise);
            body
        },
    )
}
