//! End to end: the `runner` binary runs real pipelines with real plugins built from `plugins/`.

mod common;

use std::path::Path;

use common::python_float;
use common::{plugin, plugin_dir, plugins, root, run, stderr, stdout, temp};

/// Splits CSV text (no quoted fields) into its header and rows of fields.
fn parse_csv(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = text.lines().map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>());
    let header = lines.next().expect("a header row");
    (header, lines.collect())
}

/// A spec in a temporary directory, reading the Iris CSV and finding plugins where they are built.
fn spec(dir: &Path, transforms: &str, sink: &str) -> std::path::PathBuf {
    let text = format!(
        "[pipeline]\nplugin_dir = \"{plugins}\"\n\n[source]\nkind = \"csv\"\nconfig = {{ url = \"{data}\" }}\n\n{transforms}\n\n{sink}\n",
        plugins = plugin_dir().display(),
        data = root().join("models/iris/iris.csv").display(),
    );
    let path = dir.join("spec.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The shipped example pipeline prints all 150 rows with two derived columns, values exact,
/// and its summary.
#[test]
fn petals_pipeline_derives_columns_row_by_row() {
    plugins();
    let output = run(&["run", "pipelines/petals.toml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("150 rows read, 150 rows written"), "{}", stderr(&output));

    let (input_header, input) = parse_csv(&std::fs::read_to_string(root().join("models/iris/iris.csv")).unwrap());
    let (header, rows) = parse_csv(&stdout(&output));
    let mut expected_header = input_header.clone();
    expected_header.extend(["petal_area".to_string(), "sepal_ratio".to_string()]);
    assert_eq!(header, expected_header);
    assert_eq!(rows.len(), 150);
    for (i, (row, source)) in rows.iter().zip(&input).enumerate() {
        let x: Vec<f64> = source.iter().map(|v| v.parse().unwrap()).collect();
        let mut expected = source.clone();
        expected.push(python_float(x[2] * x[3]));
        expected.push(python_float(x[0] / x[1]));
        assert_eq!(row, &expected, "row {}", i + 1);
    }
}

/// `validate` checks the plugin and lists every step with its implementation.
#[test]
fn validate_lists_the_steps() {
    plugins();
    let output = run(&["validate", "pipelines/petals.toml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("pipelines/petals.toml: ok"), "{out}");
    assert!(out.contains("transform  ratios           plugin derive.wasm"), "{out}");
}

/// A JSON-lines sink on standard output: one object per row, typed values.
#[test]
fn jsonl_sink_writes_objects_to_stdout() {
    let dir = temp();
    let transform =
        "[[transform]]\nplugin = \"derive\"\nconfig = { columns = [{ name = \"twice\", expr = \"2 * petal_width\" }] }";
    let path = spec(dir.path(), transform, "[sink]\nkind = \"jsonl\"\nconfig = { url = \"-\" }");
    plugins();
    let output = run(&["run", "--quiet", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 150);
    assert_eq!(lines[0], r#"{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2,"twice":0.4}"#);
    assert_eq!(stderr(&output), "", "--quiet prints nothing on success");
}

/// A plugin name that matches no file is a spec error (exit 2) naming the step, the file and
/// where it looked.
#[test]
fn missing_plugin_is_a_spec_error() {
    let dir = temp();
    let path = spec(
        dir.path(),
        "[[transform]]\nplugin = \"no-such-plugin\"",
        "[sink]\nkind = \"csv\"\nconfig = { url = \"-\" }",
    );
    let output = run(&["run", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("spec.toml:9:10: step `no-such-plugin`: plugin `no-such-plugin` not found"), "{err}");
    assert!(err.contains(&plugin_dir().display().to_string()), "names where it looked: {err}");
}

/// Files that are not components are refused before anything runs, with the reason.
#[test]
fn non_component_plugins_are_refused() {
    let dir = temp();
    for (bytes, reason) in [
        (&b"#!/bin/sh\necho hi\n"[..], "is not a plugin: it is not WebAssembly"),
        (&b"\0asm\x01\0\0\0"[..], "is not a plugin: it is a core WebAssembly module, not a component"),
        (&b"\0asm\x0d\0\x01\0garbage"[..], "is not a valid WebAssembly component"),
    ] {
        std::fs::write(dir.path().join("fake.wasm"), bytes).unwrap();
        let path = spec(
            dir.path(),
            "[[transform]]\nplugin = \"fake.wasm\"",
            "[sink]\nkind = \"csv\"\nconfig = { url = \"-\" }",
        );
        let output = run(&["validate", path.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(2));
        let err = stderr(&output);
        assert!(err.contains("step `fake`: ") && err.contains(&format!("fake.wasm {reason}")), "{err}");
    }
}

/// A transform plugin used as a sink is refused, naming both kinds.
#[test]
fn plugin_of_the_wrong_kind_is_refused() {
    let dir = temp();
    let sink = format!("[sink]\nplugin = \"{}\"", plugin("derive").display());
    let path = spec(dir.path(), "", &sink);
    let output = run(&["validate", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains(
            "derive.wasm is a transform plugin (it exports etl:plugin/transform@0.2.1), but this step is a sink"
        ),
        "{err}"
    );
}

/// A plugin that returns columns of unequal length fails the run (exit 1) with the plugin's
/// name, and the file sink leaves no partial output behind.
#[test]
fn malformed_batch_from_a_plugin_is_rejected() {
    let dir = temp();
    let out = dir.path().join("out.csv");
    let sink = format!("[sink]\nkind = \"csv\"\nconfig = {{ url = \"{}\" }}", out.display());
    let path = spec(dir.path(), "[[transform]]\nname = \"broken\"\nplugin = \"bad-batch\"", &sink);
    plugins();
    let output = run(&["run", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains(
            "error: step `broken`: plugin `bad_batch.wasm` returned a malformed batch: columns of unequal length: \
             `sepal_length` has 150 rows but `short` has 149"
        ),
        "{err}"
    );
    assert!(err.contains("FAILED"), "prints the partial summary: {err}");
    assert!(!out.exists(), "a failed run must not leave an output file");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left either");

    // Dictionary-encoded text whose key points past its dictionary.
    let step = "[[transform]]\nname = \"broken\"\nplugin = \"bad-batch\"\nconfig = { break = \"dictionary\" }";
    let path = spec(dir.path(), step, &sink);
    let output = run(&["run", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains(
            "error: step `broken`: plugin `bad_batch.wasm` returned a malformed batch: column `bad_keys`, row 149: \
             key 2 is outside its dictionary of 2 values"
        ),
        "{err}"
    );
    assert!(!out.exists(), "a failed run must not leave an output file");
}

/// A data error names the object and the line.
#[test]
fn bad_data_names_the_file_and_line() {
    let dir = temp();
    let data = dir.path().join("bad.csv");
    std::fs::write(&data, "a,b\n1,2\n3,x\n").unwrap();
    let text = "[source]\nkind = \"csv\"\nconfig = { url = \"bad.csv\", columns = { b = \"s64\" } }\n\n\
                [sink]\nkind = \"csv\"\nconfig = { url = \"-\" }\n";
    std::fs::write(dir.path().join("spec.toml"), text).unwrap();
    let output = run(&["run", dir.path().join("spec.toml").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains(&format!(
            "error: step `source`: {}:3: column `b`: expected an integer (s64), found `x`",
            data.display()
        )),
        "{err}"
    );
}

/// Several workers and many small batches: batches overtake each other between the workers (the
/// first batch is held 500 ms by its worker while the others go on; a second transform logs the
/// order batches reach it in, and the first is not first), and the CSV sink still writes every
/// row in the source's order. The JSON report counts all rows and names the workers.
#[test]
fn parallel_workers_keep_file_output_in_order() {
    let dir = temp();
    let ids: String = (0..150).map(|i| format!("{i},{}\n", i * 2)).collect();
    std::fs::write(dir.path().join("ids.csv"), format!("id,double\n{ids}")).unwrap();
    let path = dir.path().join("spec.toml");
    std::fs::write(
        &path,
        format!(
            "[pipeline]\nbatch_rows = 7\nplugin_dir = \"{}\"\n\n[source]\nkind = \"csv\"\nconfig = {{ url = \"ids.csv\" }}\n\n\
             [[transform]]\nname = \"held\"\nplugin = \"hostile\"\nworkers = 3\nconfig = {{ attack = \"slow-on\", value = \"0\" }}\n\n\
             [[transform]]\nname = \"arrivals\"\nplugin = \"hostile\"\nworkers = 1\nconfig = {{ attack = \"log-first\" }}\n\n\
             [sink]\nkind = \"csv\"\nconfig = {{ url = \"-\" }}\n",
            plugin_dir().display()
        ),
    )
    .unwrap();
    plugins();
    let output = run(&["run", "--report", "json", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    let arrivals: Vec<u32> =
        err.lines().filter_map(|l| l.split("first value ").nth(1)?.split_whitespace().next()?.parse().ok()).collect();
    assert_eq!(arrivals.len(), 22, "150 rows in batches of 7: {err}");
    assert_ne!(arrivals[0], 0, "the held batch came first: nothing overtook it: {arrivals:?}");
    let (_, rows) = parse_csv(&stdout(&output));
    let written: Vec<u32> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(written, (0..150).collect::<Vec<_>>(), "rows in source order");
    let report: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    assert_eq!(report["rows_written"], 150);
    assert_eq!(report["steps"][1]["workers"], 3);
    assert_eq!(report["steps"][1]["batches"], 22, "150 rows in batches of 7");
}

/// Awkward but legal inputs are read, not refused: an empty object, a header alone, NaN (a
/// missing value) and infinities, and a very long field.
#[test]
fn awkward_inputs_are_handled() {
    let dir = temp();
    let long = "x".repeat(1 << 20);
    for (body, rows, output) in [
        (String::new(), 0, String::new()),
        ("a,b\n".to_string(), 0, String::new()),
        // `nan` is a missing value, as pandas reads it (and writes it: an empty field).
        ("a,b\nnan,1\ninf,2\n-inf,3\n".to_string(), 3, "a,b\n,1\ninf,2\n-inf,3\n".to_string()),
        (format!("a,b\n{long},1\n"), 1, format!("a,b\n{long},1\n")),
    ] {
        std::fs::write(dir.path().join("in.csv"), &body).unwrap();
        let spec = dir.path().join("spec.toml");
        std::fs::write(&spec, "[source]\nkind = \"csv\"\nconfig = { url = \"in.csv\" }\n\n[sink]\nkind = \"csv\"\nconfig = { url = \"-\" }\n").unwrap();
        let out = run(&["run", spec.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains(&format!("{rows} rows read, {rows} rows written")), "{}", stderr(&out));
        assert_eq!(stdout(&out), output);
    }
}

/// The run's time includes loading its plugins (here compiled, with no cache), and the report
/// says when the first row was written.
#[test]
fn the_run_time_counts_the_loading_of_plugins() {
    common::plugins();
    let output = run(&["run", "--no-cache", "--report", "json", "pipelines/petals.toml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(stderr(&output).lines().last().unwrap()).unwrap();
    let seconds = report["seconds"].as_f64().unwrap();
    let loading = report["steps"][1]["plugin"]["load_seconds"].as_f64().unwrap();
    let first_row = report["first_row_seconds"].as_f64().unwrap();
    assert!(loading > 0.0 && seconds > loading, "{seconds} s in all, {loading} s loading");
    assert!(first_row > loading && first_row <= seconds, "first row at {first_row} s, loading {loading} s");
    let output = run(&["run", "pipelines/petals.toml"]);
    assert!(stderr(&output).contains(" s (first row written at "), "{}", stderr(&output));
}

/// A quoted field that is never closed would swallow the rest of the file as one value: the run
/// fails as pandas does ("EOF inside string"), naming the file and the line where the field
/// begins, whatever the error policy (it is the file that is broken, not a row).
#[test]
fn an_unclosed_quote_fails_the_run_naming_its_line() {
    let dir = temp();
    let mut text = String::from("a,b,c\n");
    for i in 0..50_000 {
        text.push_str(&if i == 2 { "1,\"oops,3\n".to_string() } else { format!("{i},{},{}\n", i * 2, i * 3) });
    }
    let data = dir.path().join("quoted.csv");
    std::fs::write(&data, text).unwrap();
    for policy in ["", "on_error = \"skip\"\n"] {
        let spec = dir.path().join("spec.toml");
        std::fs::write(
            &spec,
            format!("[source]\nkind = \"csv\"\n{policy}config = {{ url = \"quoted.csv\" }}\n\n[sink]\nkind = \"csv\"\nconfig = {{ url = \"out.csv\" }}\n"),
        )
        .unwrap();
        let output = run(&["run", spec.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{policy}: {}", stderr(&output));
        let err = stderr(&output);
        assert!(
            err.contains(&format!(
                "error: step `source`: {}:4: a quoted field starting in this row is never closed",
                data.display()
            )),
            "{policy}: {err}"
        );
        assert!(!dir.path().join("out.csv").exists());
    }
}

/// A header of 150,000 columns (and a row of as many values) is read in linear time and memory:
/// well within a minute and 1 GiB, where checking names pairwise and reserving a batch per
/// column took minutes and gigabytes.
#[test]
fn a_very_wide_csv_is_read_in_linear_time_and_memory() {
    let dir = temp();
    let columns = 150_000;
    let header: Vec<String> = (0..columns).map(|i| format!("c{i}")).collect();
    let row: Vec<String> = (0..columns).map(|i| (i % 10).to_string()).collect();
    std::fs::write(dir.path().join("wide.csv"), format!("{}\n{}\n", header.join(","), row.join(","))).unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, "[source]\nkind = \"csv\"\nconfig = { url = \"wide.csv\" }\n\n[sink]\nkind = \"jsonl\"\nconfig = { url = \"out.jsonl\" }\n").unwrap();
    let started = std::time::Instant::now();
    let child =
        common::runner().args(["run", spec.to_str().unwrap()]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let (output, peak) = common::wait_measured(child);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "took {:?}", started.elapsed());
    assert!(peak < 1 << 30, "peak RSS {peak} bytes");
    let out: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap()).unwrap();
    assert_eq!(out.as_object().unwrap().len(), columns);
    assert_eq!(out["c149999"], 9);
}

/// A plugin may not hand the host more than its memory limit holds, whatever the encoding: one
/// 16 MiB text that 150 rows refer to (2.4 GiB spelled out) as a dictionary, six strings
/// pointing at it (96 MiB copied out: more than the plugin's limit, less than wasmtime's
/// default bound), or 200,000 columns, from a plugin limited to 64 MiB, fails the run at once,
/// naming the plugin and the limit, with the host's memory and time small.
#[test]
fn a_batch_beyond_the_plugins_limits_is_refused() {
    plugins();
    let dir = temp();
    for (attack, says) in [
        (
            "amplify",
            "returned a batch whose dictionary-encoded text, spelled out (column `amplified`), is more than its memory limit of 64 MiB",
        ),
        ("alias", "returned more data than its memory limit of 64 MiB holds (limits.memory_mb)"),
        ("wide", "returned a batch of 200000 columns, more than its memory limit of 64 MiB allows"),
    ] {
        let step = format!(
            "[[transform]]\nname = \"greedy\"\nplugin = \"bad-batch\"\nworkers = 1\nconfig = {{ break = \"{attack}\" }}\n\
             limits = {{ memory_mb = 64, call_seconds = 2 }}\n\n\
             [[transform]]\nplugin = \"hostile\"\nworkers = 1\nconfig = {{ attack = \"none\" }}"
        );
        let path = spec(dir.path(), &step, "[sink]\nkind = \"jsonl\"\nconfig = { url = \"out.jsonl\" }");
        let started = std::time::Instant::now();
        let child = common::runner()
            .args(["run", path.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (output, peak) = common::wait_measured(child);
        assert_eq!(output.status.code(), Some(1), "{attack}: {}", stderr(&output));
        let err = stderr(&output);
        assert!(err.contains(&format!("error: step `greedy`: plugin `bad_batch.wasm` {says}")), "{attack}: {err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{attack}: took {:?}", started.elapsed());
        assert!(peak < 1 << 30, "{attack}: peak RSS {peak} bytes");
    }
}

/// `runner validate` reads the source's header (no rows) and checks the columns every built-in
/// step reads against what reaches it: a row-key over a column the input lacks is a spec
/// error, exit 2, located at the step. After a plugin, whose output columns only its run
/// tells, the checks are skipped, and validate says so.
#[test]
fn validate_checks_columns_up_to_the_first_plugin() {
    plugins();
    let dir = temp();
    let spec = |first_key: &str| {
        let path = dir.path().join("spec.toml");
        std::fs::write(
            &path,
            format!(
                "[pipeline]\nplugin_dir = \"{}\"\n\n[source]\nkind = \"csv\"\nconfig = {{ url = \"{}\" }}\n\n\
                 [[transform]]\nname = \"first\"\nkind = \"row-key\"\nconfig = {{ columns = [\"{first_key}\"], output = \"k1\" }}\n\n\
                 [[transform]]\nplugin = \"derive\"\n[[transform.config.columns]]\nname = \"petal_area\"\n\
                 expr = \"petal_length * petal_width\"\n\n\
                 [[transform]]\nname = \"second\"\nkind = \"row-key\"\nconfig = {{ columns = [\"petal_area\"], output = \"k2\" }}\n\n\
                 [sink]\nkind = \"discard\"\n",
                plugin_dir().display(),
                root().join("models/iris/iris.csv").display()
            ),
        )
        .unwrap();
        path
    };
    let output = run(&["validate", spec("sepal_length").to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(
            "note: step `second`: its columns are not checked: they come from step `derive` (plugin derive.wasm)"
        ),
        "{}",
        stdout(&output)
    );
    let output = run(&["validate", spec("sepal_lenght").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains(":10:8: step `first`: no column `sepal_lenght` reaches this step (it gets: sepal_length,"),
        "{err}"
    );
}

/// A run whose standard error is not a terminal logs a `progress:` line at the interval asked
/// for (a transform held 200 ms a batch keeps it going for seconds), with its `key=value`
/// fields; `--no-progress` logs none; and a run on a terminal, which draws the progress line
/// instead, logs none either.
#[test]
fn progress_lines_appear_at_the_interval_when_stderr_is_not_a_terminal() {
    plugins();
    let dir = temp();
    let transforms =
        "[[transform]]\nplugin = \"hostile\"\nworkers = 1\nconfig = { attack = \"slow\", value = \"200\" }";
    let path = spec(dir.path(), transforms, "[sink]\nkind = \"discard\"");
    let text = std::fs::read_to_string(&path).unwrap().replace("[pipeline]\n", "[pipeline]\nbatch_rows = 10\n");
    std::fs::write(&path, text).unwrap();
    let spec = path.to_str().unwrap();

    let output = run(&["run", "--progress-seconds", "1", spec]);
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains(" progress: ")).collect();
    assert!(lines.len() >= 2, "a line a second over a run of 3 s: {err}");
    for line in &lines {
        for key in ["elapsed_s=", "read_rows=", "written_rows=", "rejected_rows=0", "rows_per_s=", "bytes_total="] {
            assert!(line.contains(key), "{key} in {line}");
        }
    }
    let first_read: u64 = lines[0].split("read_rows=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(first_read > 0 && first_read < 150, "the first line is mid-run: {}", lines[0]);

    let output = run(&["run", "--progress-seconds", "1", "--no-progress", spec]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains(" progress: "), "{}", stderr(&output));

    // On a terminal (util-linux's `script` gives the run one), the progress line instead.
    if !common::services::available("script") {
        return;
    }
    let command = format!("{} run --progress-seconds 1 {spec}", common::runner_binary().display());
    let output = std::process::Command::new("script").args(["-qefc", &command, "/dev/null"]).output().unwrap();
    assert!(output.status.success(), "{}", stdout(&output));
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(shown.contains("rows read"), "the summary reached the terminal: {shown}");
    assert!(!shown.contains(" progress: "), "{shown}");
}
