//! The file sinks leave a complete file or none: shards cannot overwrite each other's output, a
//! rename that fails leaves no temporary behind, the temporaries of killed runs are cleaned up,
//! a link planted where a temporary might go is never followed, and an upload whose server goes
//! away leaves no object.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::services::{RedisServer, S3Server};
use common::{Lines, files_named, plugin_dir, plugins, root, run, runner, signal, stderr, temp, wait_until};

/// `dir/spec.toml`: `rows.csv` (ids 0..rows) to `sink` (its table's body), with `extra` lines in
/// the source table.
fn spec(dir: &Path, rows: usize, sink: &str, extra: &str) -> std::path::PathBuf {
    let body: String = (0..rows).map(|i| format!("{i},v{i}\n")).collect();
    std::fs::write(dir.join("rows.csv"), format!("id,value\n{body}")).unwrap();
    let path = dir.join("spec.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\nkind = \"csv\"\n{extra}\nconfig = {{ url = \"rows.csv\", split_bytes = 64 }}\n\n[sink]\n{sink}\n"
        ),
    )
    .unwrap();
    path
}

/// In a sharded run, a file sink or a file dead letter whose URL has no `{shard}` would be
/// written by every shard, the last replacing the others' rows: refused before anything runs,
/// exit 2, naming the URL. With `{shard}`, each shard writes its own part, and the parts
/// together hold every row once.
#[test]
fn a_sharded_run_refuses_an_output_every_shard_would_write() {
    let dir = temp();
    let spec = spec(dir.path(), 100, "kind = \"csv\"\nconfig = { url = \"out/result.csv\" }", "");
    for args in [vec!["--shard", "1/2"], vec!["--shards", "2"]] {
        let output = runner().arg("run").args(&args).arg(&spec).env("JOB_COMPLETION_INDEX", "0").output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        let err = stderr(&output);
        assert!(err.contains("step `sink`: `out/result.csv` would be written by each of the 2 shards"), "{err}");
        assert!(err.contains("put `{shard}` in it"), "{err}");
    }
    assert!(!dir.path().join("out").exists(), "nothing ran");
    // One run of one shard writes the file as it is.
    let output = run(&["run", spec.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));

    // A dead letter file is an output too.
    let dead = "on_error = \"dead-letter\"\ndead_letter = { url = \"rejected.jsonl\" }";
    let spec_dead = self::spec(dir.path(), 100, "kind = \"discard\"", dead);
    let output = runner().args(["run", "--shard", "0/3"]).arg(&spec_dead).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("dead letter: `rejected.jsonl` would be written by each of the 3 shards"));

    // With `{shard}`: two parts, every row once.
    let spec = self::spec(dir.path(), 100, "kind = \"csv\"\nconfig = { url = \"out/part-{shard}.csv\" }", "");
    let mut ids = Vec::new();
    for shard in ["0/2", "1/2"] {
        let output = runner().args(["run", "--shard", shard]).arg(&spec).output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
    }
    for part in ["part-0.csv", "part-1.csv"] {
        let text = std::fs::read_to_string(dir.path().join("out").join(part)).unwrap();
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert!(!lines.is_empty(), "{part} has rows");
        ids.extend(lines.iter().map(|l| l.split(',').next().unwrap().parse::<u32>().unwrap()));
    }
    ids.sort();
    assert_eq!(ids, (0..100).collect::<Vec<_>>());
}

/// A rename into place that fails (the destination is a directory) fails the run, and the
/// temporary file goes with it.
#[test]
fn a_failed_rename_leaves_no_temporary() {
    let dir = temp();
    std::fs::create_dir_all(dir.path().join("out/result.csv/occupied")).unwrap();
    let spec = spec(dir.path(), 100, "kind = \"csv\"\nconfig = { url = \"out/result.csv\" }", "");
    let output = run(&["run", spec.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("cannot move "), "{}", stderr(&output));
    assert_eq!(files_named(&dir.path().join("out"), ".partial"), Vec::<String>::new());
    assert!(dir.path().join("out/result.csv/occupied").is_dir(), "the directory is untouched");
}

/// A run killed (SIGKILL: nothing of it runs after) leaves its temporary file; the next run that
/// writes the same file removes it, and leaves alone a temporary of a process that still runs
/// and the temporaries of other files.
#[test]
fn temporaries_of_killed_runs_are_removed_by_the_next_run() {
    plugins();
    let dir = temp();
    let out = dir.path().join("result.csv");
    let spec = dir.path().join("spec.toml");
    let text = |delay: u32| {
        format!(
            "[pipeline]\nbatch_rows = 10\nplugin_dir = \"{}\"\n\n[source]\nkind = \"csv\"\nconfig = {{ url = \"{}\" }}\n\n\
             [[transform]]\nplugin = \"hostile\"\nworkers = 1\nconfig = {{ attack = \"slow\", value = \"{delay}\" }}\n\n\
             [sink]\nkind = \"csv\"\nconfig = {{ url = \"{}\" }}\n",
            plugin_dir().display(),
            root().join("models/iris/iris.csv").display(),
            out.display()
        )
    };
    std::fs::write(&spec, text(200)).unwrap();
    assert!(runner().args(["validate", spec.to_str().unwrap()]).stdout(Stdio::null()).status().unwrap().success());
    let mut child = runner().args(["run", spec.to_str().unwrap()]).stderr(Stdio::null()).spawn().unwrap();
    wait_until("the killed run's temporary", Duration::from_secs(60), || {
        !files_named(dir.path(), ".partial").is_empty()
    });
    signal(child.id(), libc::SIGKILL);
    child.wait().unwrap();
    let left = files_named(dir.path(), ".partial");
    assert_eq!(left.len(), 1, "SIGKILL leaves the temporary: {left:?}");
    // Another process's temporary (this test's: it runs), and another file's.
    let alive = format!(".result.csv.{}.abcdef.partial", std::process::id());
    let other = ".other.csv.1.abcdef.partial";
    for name in [&alive, other] {
        std::fs::write(dir.path().join(name), "x").unwrap();
    }

    std::fs::write(&spec, text(0)).unwrap();
    let output = run(&["run", spec.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 151);
    assert_eq!(files_named(dir.path(), ".partial"), [other.to_string(), alive], "only the killed run's is gone");
    assert!(stderr(&output).contains("left by a run that was killed"), "{}", stderr(&output));
}

/// Links planted at the names a temporary file could be given (every `.out.csv.PID.partial` of
/// the next 20,000 process ids, as the runner named them before) are never followed: the file
/// they point to is untouched and the output is complete. The temporary is created exclusively,
/// under a name no one can guess.
#[test]
fn a_link_planted_at_a_temporary_name_is_not_followed() {
    let dir = temp();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let spec =
        spec(dir.path(), 100, &format!("kind = \"csv\"\nconfig = {{ url = \"{}/out.csv\" }}", out_dir.display()), "");
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid").unwrap().trim().parse().unwrap();
    let planted = last + 1..last + 20_000;
    for pid in planted.clone() {
        std::os::unix::fs::symlink(&victim, out_dir.join(format!(".out.csv.{pid}.partial"))).unwrap();
    }
    let child = runner().arg("run").arg(&spec).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(planted.contains(&pid), "the runner's pid {pid} was not among the planted names: the test proves nothing");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "the link was followed");
    assert_eq!(std::fs::read_to_string(out_dir.join("out.csv")).unwrap().lines().count(), 101);
}

/// `dir/spec.toml`: `wide.csv` (300 rows of 100 KiB, ids 0..300), 10 rows a batch, through the
/// hostile plugin doing `attack`, uploaded to `s3://out/wide.csv`.
fn upload_spec(dir: &Path, s3: &S3Server, attack: &str, value: &str) -> std::path::PathBuf {
    let text = "x".repeat(100 << 10);
    let body: String = (0..300).map(|i| format!("{i},{text}\n")).collect();
    std::fs::write(dir.join("wide.csv"), format!("id,text\n{body}")).unwrap();
    let spec = dir.join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "[pipeline]\nbatch_rows = 10\nplugin_dir = \"{}\"\n\n{}timeout_seconds = 1\n\n\
             [source]\nkind = \"csv\"\nconfig = {{ url = \"wide.csv\" }}\n\n\
             [[transform]]\nplugin = \"hostile\"\nworkers = 1\nconfig = {{ attack = \"{attack}\", value = \"{value}\" }}\n\n\
             [sink]\nkind = \"csv\"\nconfig = {{ url = \"s3://out/wide.csv\" }}\n",
            plugin_dir().display(),
            s3.spec_table(),
        ),
    )
    .unwrap();
    assert!(runner().args(["validate", spec.to_str().unwrap()]).stdout(Stdio::null()).status().unwrap().success());
    spec
}

/// A run that fails once parts of its upload are stored (a plugin refuses row 250, 25 MiB in)
/// aborts the upload: exit 1, and no object appears, complete or partial.
#[test]
fn a_run_failing_mid_upload_leaves_no_object() {
    plugins();
    let s3 = S3Server::start();
    s3.bucket("out");
    let dir = temp();
    let spec = upload_spec(dir.path(), &s3, "row-error", "250");
    let output = runner().arg("run").arg(&spec).output().unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot handle value 250"), "{err}");
    assert_eq!(s3.keys("out", ""), Vec::<String>::new(), "a failed run left an object: {err}");
}

/// An upload whose server goes away mid-upload (its first 8 MiB part stored, the rest still to
/// come; each batch held 100 ms by the plugin, so the run still writes) fails the run, exit 1,
/// naming the object's URL and saying the stored parts are not an object; the server back, no
/// object is there, not even a partial one.
#[test]
fn an_upload_whose_server_goes_away_leaves_no_object() {
    plugins();
    let mut s3 = S3Server::start();
    s3.bucket("out");
    let dir = temp();
    let spec = upload_spec(dir.path(), &s3, "slow", "100");
    let mut child = runner().args(["run", spec.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap();
    let lines = Lines::of(&mut child);
    wait_until("the first part is uploaded", Duration::from_secs(60), || !s3.upload_parts().is_empty());
    s3.stop();
    let status = child.wait().unwrap();
    let err = lines.rest();
    assert_eq!(status.code(), Some(1), "{err}");
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("s3://out/wide.csv"), "the error names the object: {line}");
    assert!(err.contains("its parts are not an object"), "the abort that failed is reported: {err}");
    s3.restart();
    assert_eq!(s3.keys("out", ""), Vec::<String>::new(), "no object, complete or partial: {err}");
}

/// An `s3://` dead letter is put as the run commits, just before the sink: when the sink's
/// commit then fails (its rename into place meets a directory), the run fails, exit 1, and the
/// dead letter object is deleted again, so the failed run leaves nothing behind. With the
/// rename possible, the same run leaves both.
#[test]
fn a_commit_that_fails_leaves_no_s3_dead_letter() {
    let s3 = S3Server::start();
    s3.bucket("out");
    let dir = temp();
    std::fs::write(dir.path().join("dirty.csv"), "a,b\n1,2\n3\n4,5\n").unwrap();
    std::fs::create_dir_all(dir.path().join("out/result.csv/occupied")).unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "{}\n[source]\nkind = \"csv\"\non_error = \"dead-letter\"\ndead_letter = {{ url = \"s3://out/rejected.jsonl\" }}\n\
             config = {{ url = \"dirty.csv\" }}\n\n[sink]\nkind = \"csv\"\nconfig = {{ url = \"out/result.csv\" }}\n",
            s3.spec_table()
        ),
    )
    .unwrap();
    let output = run(&["run", spec.to_str().unwrap()]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot move "), "{err}");
    assert_eq!(s3.keys("out", ""), Vec::<String>::new(), "the failed run left its dead letter: {err}");

    std::fs::remove_dir_all(dir.path().join("out/result.csv")).unwrap();
    let output = run(&["run", spec.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(s3.keys("out", ""), ["rejected.jsonl"]);
    let rejected = String::from_utf8(s3.get("out", "rejected.jsonl").unwrap()).unwrap();
    assert!(rejected.contains("\"at\":") && rejected.lines().count() == 1, "{rejected}");
    assert!(dir.path().join("out/result.csv").is_file());
}

/// A dead letter at the sink's own output would be replaced by the sink's file: a spec error,
/// exit 2, naming the step, however the path is written. Steps that name one dead letter share
/// it: one object holds both steps' rejected rows, each naming its step.
#[test]
fn a_dead_letter_at_the_sinks_output_is_refused_and_steps_may_share_one() {
    let dir = temp();
    std::fs::write(dir.path().join("rows.csv"), "id,value\n1,a\n").unwrap();
    for (source, sink, says) in [
        (
            "on_error = \"dead-letter\"\ndead_letter = { url = \"out/result.csv\" }\n",
            "",
            "step `source`: its dead letter `out/result.csv` is the sink's output",
        ),
        (
            "",
            "on_error = \"dead-letter\"\ndead_letter = { url = \"./out/../out/result.csv\" }\n",
            "step `sink`: its dead letter `./out/../out/result.csv` is the sink's output",
        ),
    ] {
        let spec = dir.path().join("spec.toml");
        std::fs::write(
            &spec,
            format!(
                "[source]\nkind = \"csv\"\n{source}config = {{ url = \"rows.csv\" }}\n\n\
                 [sink]\nkind = \"csv\"\n{sink}config = {{ url = \"out/result.csv\" }}\n"
            ),
        )
        .unwrap();
        let output = run(&["validate", spec.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(2), "{says}: {}", stderr(&output));
        assert!(stderr(&output).contains(says), "{says}: {}", stderr(&output));
    }

    // The source's malformed row and the sink's row Redis cannot take (a null value), into
    // one S3 dead letter.
    let Some(redis) = RedisServer::start() else { return };
    let s3 = S3Server::start();
    s3.bucket("out");
    std::fs::write(dir.path().join("rows.csv"), "key,label\nk0,a\nk1\nk2,\nk3,b\n").unwrap();
    let dead_letter = "on_error = \"dead-letter\"\ndead_letter = { url = \"s3://out/rejected.jsonl\" }\n";
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "{}\n[source]\nkind = \"csv\"\n{dead_letter}config = {{ url = \"rows.csv\" }}\n\n\
             [sink]\nkind = \"redis\"\n{dead_letter}config = {{ url = \"{}\", value = \"label\" }}\n",
            s3.spec_table(),
            redis.url()
        ),
    )
    .unwrap();
    let output = run(&["run", spec.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let rejected = String::from_utf8(s3.get("out", "rejected.jsonl").unwrap()).unwrap();
    let steps: Vec<String> = rejected
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["step"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(steps, ["source", "sink"], "{rejected}");
    assert_eq!(redis.dbsize(), 2);
}
