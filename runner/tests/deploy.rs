//! Running on engines users already have: what the container image holds (`cargo xtask dist`,
//! which the Dockerfile runs), the Kubernetes Indexed Job and its ConfigMap (the official schema
//! offline, and the rules it cannot check), docker-compose.yml, and the Metaflow flow, run
//! locally with four shards into Redis.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::services::{RedisServer, S3_ACCESS_KEY, S3_SECRET_KEY, S3Server, python_has};
use common::{root, runner, stderr, stdout, temp};

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

/// `cargo xtask dist DIR` lays out the image's /opt/runner: the runner, the plugins where the
/// pipelines look, the pipelines, and the plugins compiled in `cache/`, readable by anyone and
/// writable only by the owner. A run from it loads the predictor from that cache.
#[test]
fn the_image_holds_the_runner_the_plugins_and_their_compiled_cache() {
    common::plugins();
    let dist = temp();
    let dir = dist.path().join("opt-runner");
    let output = cargo().args(["xtask", "dist"]).arg(&dir).arg("--debug").output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    for file in [
        "bin/runner",
        "plugins/target/wasm32-wasip2/release/onnx_predictor.wasm",
        "plugins/target/wasm32-wasip2/release/derive.wasm",
        "pipelines/iris.toml",
        "models/iris/model.json",
    ] {
        assert!(dir.join(file).is_file(), "{file} is missing");
    }
    assert!(!dir.join("plugins/target/wasm32-wasip2/release/hostile.wasm").exists(), "test fixtures are not shipped");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("cache")), 0o755);
    let entries: Vec<PathBuf> = std::fs::read_dir(dir.join("cache")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 4, "{entries:?}");
    assert!(entries.iter().all(|e| mode(e) == 0o644), "{entries:?}");
    assert_eq!(mode(&dir.join("bin/runner")), 0o755);

    let output = Command::new(dir.join("bin/runner"))
        .current_dir(&dir)
        .env("RUNNER_CACHE_DIR", dir.join("cache"))
        .args(["run", "pipelines/iris-local.toml"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("(cache hit"), "{}", stderr(&output));
    assert_eq!(stdout(&output).lines().count(), 151);
}

/// A YAML file as JSON, through Python (PyYAML comes with kubernetes-validate).
fn yaml(path: &Path) -> serde_json::Value {
    let script = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))";
    let output = Command::new(common::python()).args(["-c", script]).arg(path).output().unwrap();
    assert!(output.status.success(), "{}: {}", path.display(), stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The rules of an Indexed Job of shards that the schema cannot check: Indexed, pods that are
/// not restarted in place, one completion per shard and all running at once, the shard count in
/// `--shards`, and an invalid spec (exit status 2) failing its index at once.
fn job_problems(job: &serde_json::Value) -> Vec<String> {
    let spec = &job["spec"];
    let pod = &spec["template"]["spec"];
    let mut problems = Vec::new();
    if spec["completionMode"] != "Indexed" {
        problems.push("completionMode must be Indexed (the pods take their shard from JOB_COMPLETION_INDEX)".into());
    }
    if pod["restartPolicy"] != "Never" {
        problems.push("restartPolicy must be Never (backoffLimitPerIndex and podFailurePolicy need it)".into());
    }
    let (completions, parallelism) = (spec["completions"].as_u64(), spec["parallelism"].as_u64());
    if completions.is_none() || completions != parallelism {
        problems
            .push(format!("completions ({completions:?}) and parallelism ({parallelism:?}) must be the shard count"));
    }
    let args: Vec<&str> =
        pod["containers"][0]["args"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).collect();
    let shards =
        args.iter().position(|a| *a == "--shards").and_then(|i| args.get(i + 1)).and_then(|n| n.parse::<u64>().ok());
    if shards != completions {
        problems.push(format!("--shards {shards:?} must equal completions {completions:?}"));
    }
    if spec["backoffLimitPerIndex"].as_u64().is_none() {
        problems.push("backoffLimitPerIndex must be set: a failed shard is retried alone".into());
    }
    let fails_on_2 = spec["podFailurePolicy"]["rules"].as_array().into_iter().flatten().any(|rule| {
        rule["action"] == "FailIndex" && rule["onExitCodes"]["values"].as_array().is_some_and(|v| v.contains(&2.into()))
    });
    if !fails_on_2 {
        problems.push("podFailurePolicy must fail the index at once on exit code 2 (an invalid spec)".into());
    }
    problems
}

/// The Job and ConfigMap validate against Kubernetes's own schema (offline, kubernetes-validate)
/// and keep the rules it cannot check; a manifest with an unknown field, or an Indexed Job whose
/// pods restart, fails. The pipeline in the ConfigMap is a valid spec for the plugins the image
/// holds.
#[test]
fn the_kubernetes_manifests_are_valid() {
    if !python_has(&["kubernetes_validate", "yaml"], common::PIP_INSTALL) {
        return;
    }
    let validate = |files: &[&Path]| {
        Command::new(common::python_tool("kubernetes-validate")).arg("--strict").args(files).output().unwrap()
    };
    let job = root().join("deploy/kubernetes/job.yaml");
    let configmap = root().join("deploy/kubernetes/configmap.yaml");
    let output = validate(&[&job, &configmap]);
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    assert_eq!(job_problems(&yaml(&job)), Vec::<String>::new());

    let dir = temp();
    let text = std::fs::read_to_string(&job).unwrap();
    let broken = dir.path().join("unknown-field.yaml");
    std::fs::write(&broken, text.replace("completionMode: Indexed", "completionMode: Indexed\n  retriesPerShard: 3"))
        .unwrap();
    assert!(!validate(&[&broken]).status.success(), "an unknown field passed the schema");
    let restarting = dir.path().join("restarting.yaml");
    std::fs::write(&restarting, text.replace("restartPolicy: Never", "restartPolicy: OnFailure")).unwrap();
    assert!(job_problems(&yaml(&restarting)).iter().any(|p| p.starts_with("restartPolicy must be Never")));
    let mismatched = dir.path().join("mismatched.yaml");
    std::fs::write(&mismatched, text.replace("\"--shards\", \"4\"", "\"--shards\", \"3\"")).unwrap();
    assert!(job_problems(&yaml(&mismatched)).iter().any(|p| p.starts_with("--shards Some(3)")));

    // The ConfigMap's pipeline validates, with the plugins found where this checkout builds them
    // (the image keeps them under /opt/runner) and its assets in a real bucket.
    common::plugins();
    let s3 = S3Server::start();
    s3.bucket("batch");
    s3.put("batch", "artifact/model.json", &root().join("models/iris/model.json"));
    let pipeline = yaml(&configmap)["data"]["pipeline.toml"].as_str().unwrap().to_string();
    let spec = dir.path().join("pipeline.toml");
    std::fs::write(&spec, pipeline).unwrap();
    let output = runner()
        .env("S3_ENDPOINT", s3.endpoint())
        .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
        .env("REDIS_URL", "redis://127.0.0.1:1/0")
        .args(["validate", "--plugin-dir"])
        .arg(common::plugin_dir())
        .arg(&spec)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
}

/// docker-compose.yml is a valid Compose file (Debian's docker-compose checks it without an
/// engine), with the job's own service behind a profile.
#[test]
fn the_compose_file_is_valid() {
    if !common::services::available("docker-compose") {
        return;
    }
    let output = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let output = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "--profile", "runner", "config", "--services"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(stdout(&output).lines().any(|s| s == "runner"), "{}", stdout(&output));

    // Every image pinned to a release (no `latest`, no bare name), and no health check that
    // calls a tool the image lacks (MinIO's has had no curl since November 2023).
    let output = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "--profile", "runner", "config"])
        .current_dir(root())
        .output()
        .unwrap();
    let config = stdout(&output);
    let images: Vec<&str> = config.lines().filter_map(|l| l.trim().strip_prefix("image: ")).collect();
    assert_eq!(images.len(), 4, "{config}");
    for image in images {
        let tag = image.rsplit_once(':').map(|(_, tag)| tag).filter(|tag| !tag.contains('/'));
        assert!(tag.is_some_and(|tag| tag != "latest"), "`{image}` is not pinned to a release");
    }
    assert!(!config.contains("curl") && !config.contains("wget"), "{config}");
    assert!(config.contains("- mc\n") && config.contains("- ready\n"), "MinIO's health check is `mc ready`: {config}");
}

/// The Metaflow flow, run locally: four `foreach` branches, each `runner run --shard i/4`, leave
/// Redis exactly as one run does, and the join adds up the shards' reports.
#[test]
fn the_metaflow_flow_runs_four_shards() {
    if !python_has(&["metaflow"], common::PIP_INSTALL) {
        return;
    }
    let Some(one) = RedisServer::start() else { return };
    let Some(shards) = RedisServer::start() else { return };
    common::plugins();
    let s3 = S3Server::start();
    s3.bucket("batch");
    s3.put("batch", "artifact/model.json", &root().join("models/iris/model.json"));
    let dir = temp();
    let data = dir.path().join("rows.csv");
    let iris = std::fs::read_to_string(root().join("models/iris/iris.csv")).unwrap();
    let mut text = iris.lines().next().unwrap().to_string() + "\n";
    for (i, line) in iris.lines().skip(1).cycle().take(3000).enumerate() {
        let rest = line.split_once(',').unwrap().1;
        text.push_str(&format!("{:.4},{rest}\n", 4.0 + i as f64 / 1000.0));
    }
    std::fs::write(&data, text).unwrap();
    s3.put("batch", "data/rows.csv", &data);
    let spec_text = std::fs::read_to_string(root().join("pipelines/iris.toml"))
        .unwrap()
        .replace("data/iris.csv\" }", "data/rows.csv\", split_bytes = 8192 }")
        .replace("../plugins/target", &format!("{}/plugins/target", root().display()));
    let spec = dir.path().join("rows.toml");
    std::fs::write(&spec, spec_text).unwrap();
    let env = |command: &mut Command, redis: &RedisServer| {
        command
            .env("S3_ENDPOINT", s3.endpoint())
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
            .env("REDIS_URL", redis.url())
            .env("RUNNER_CACHE_DIR", common::cache_dir())
            .env_remove("RUST_LOG");
    };
    let mut single = Command::new(env!("CARGO_BIN_EXE_runner"));
    env(&mut single, &one);
    let output = single.arg("run").arg(&spec).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));

    let mut flow = Command::new(common::python());
    env(&mut flow, &shards);
    let output = flow
        .current_dir(dir.path())
        .env("USERNAME", "runner-tests")
        .env("METAFLOW_DEFAULT_DATASTORE", "local")
        .env("METAFLOW_DEFAULT_METADATA", "local")
        .arg(root().join("deploy/metaflow/flow.py"))
        .args([
            "--no-pylint",
            "run",
            "--shards",
            "4",
            "--max-workers",
            "4",
            "--runner",
            env!("CARGO_BIN_EXE_runner"),
            "--spec",
        ])
        .arg(&spec)
        .output()
        .unwrap();
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert!(output.status.success(), "{all}");
    assert!(all.contains("4 shards: 3000 rows read, 3000 rows written, 0 rejected"), "{all}");
    assert!(one.contents().len() > 2000);
    assert!(shards.contents() == one.contents(), "the flow's four shards left other contents than one run");
}
