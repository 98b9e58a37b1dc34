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
    if !args.contains(&"--plan") {
        problems.push("the shards must run from the plan plan-job.yaml writes (--plan)".into());
    }
    problems
}

/// What the plan Job must agree on with the Indexed Job: it runs `runner plan` on the same
/// pipeline for the same number of shards, into the plan file the shards read.
fn plan_job_problems(plan_job: &serde_json::Value, job: &serde_json::Value) -> Vec<String> {
    let container = |job: &serde_json::Value| job["spec"]["template"]["spec"]["containers"][0].clone();
    let args = |job: &serde_json::Value| -> Vec<String> {
        container(job)["args"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect()
    };
    let after =
        |args: &[String], flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let env = |job: &serde_json::Value, name: &str| {
        container(job)["env"].as_array().into_iter().flatten().find(|e| e["name"] == name).map(|e| e["value"].clone())
    };
    let (planning, running) = (args(plan_job), args(job));
    let mut problems = Vec::new();
    if planning.first().map(String::as_str) != Some("plan") || planning.get(1) != running.get(1) {
        problems.push(format!("the plan Job must run `runner plan` on the shards' spec: {planning:?}"));
    }
    if after(&planning, "--shards") != after(&running, "--shards") {
        problems.push("the plan Job must plan for the shards' --shards".into());
    }
    if after(&planning, "--out").as_deref() != Some("$(PLAN_URL)")
        || after(&running, "--plan").as_deref() != Some("$(PLAN_URL)")
    {
        problems.push("the plan goes to --out $(PLAN_URL) and the shards read --plan $(PLAN_URL)".into());
    }
    if env(plan_job, "PLAN_URL").is_none() || env(plan_job, "PLAN_URL") != env(job, "PLAN_URL") {
        problems.push("PLAN_URL must be the same in both Jobs".into());
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
    let plan_job = root().join("deploy/kubernetes/plan-job.yaml");
    let output = validate(&[&job, &configmap, &plan_job]);
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    assert_eq!(job_problems(&yaml(&job)), Vec::<String>::new());
    assert_eq!(plan_job_problems(&yaml(&plan_job), &yaml(&job)), Vec::<String>::new());

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
    let plan_text = std::fs::read_to_string(&plan_job).unwrap();
    let other_plan = dir.path().join("other-plan.yaml");
    std::fs::write(&other_plan, plan_text.replace("\"--shards\", \"4\"", "\"--shards\", \"3\"")).unwrap();
    assert!(!plan_job_problems(&yaml(&other_plan), &yaml(&job)).is_empty(), "a plan for 3 shards passed");

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

/// The flow's setting: the flagship pipeline over 3,000 rows cut into splits (`objects` objects
/// under `data/rows/`), the S3 server holding them, and the environment a run needs.
struct FlowJob {
    s3: S3Server,
    dir: tempfile::TempDir,
    spec: PathBuf,
    /// Each object's key and bytes.
    objects: Vec<(String, Vec<u8>)>,
}

impl FlowJob {
    fn new(objects: usize) -> FlowJob {
        common::plugins();
        let s3 = S3Server::start();
        s3.bucket("batch");
        s3.put("batch", "artifact/model.json", &root().join("models/iris/model.json"));
        let dir = temp();
        let iris = std::fs::read_to_string(root().join("models/iris/iris.csv")).unwrap();
        let header = iris.lines().next().unwrap().to_string() + "\n";
        let mut texts = vec![header.clone(); objects];
        for (i, line) in iris.lines().skip(1).cycle().take(3000).enumerate() {
            let rest = line.split_once(',').unwrap().1;
            texts[i * objects / 3000].push_str(&format!("{:.4},{rest}\n", 4.0 + i as f64 / 1000.0));
        }
        let mut stored = Vec::new();
        for (k, text) in texts.into_iter().enumerate() {
            let key = format!("data/rows/part-{k}.csv");
            let path = dir.path().join(format!("part-{k}.csv"));
            std::fs::write(&path, &text).unwrap();
            s3.put("batch", &key, &path);
            stored.push((key, text.into_bytes()));
        }
        let spec_text = std::fs::read_to_string(root().join("pipelines/iris.toml"))
            .unwrap()
            .replace("data/iris.csv\" }", "data/rows/\", split_bytes = 8192 }")
            .replace("../plugins/target", &format!("{}/plugins/target", root().display()));
        let spec = dir.path().join("rows.toml");
        std::fs::write(&spec, spec_text).unwrap();
        FlowJob { s3, dir, spec, objects: stored }
    }

    fn env(&self, command: &mut Command, redis: &RedisServer) {
        command
            .env("S3_ENDPOINT", self.s3.endpoint())
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
            .env("REDIS_URL", redis.url())
            .env("RUNNER_CACHE_DIR", common::cache_dir())
            .env_remove("RUST_LOG");
    }

    /// What one unsharded run leaves in `redis`.
    fn one_run(&self, redis: &RedisServer) -> Vec<(String, String)> {
        let mut single = Command::new(env!("CARGO_BIN_EXE_runner"));
        self.env(&mut single, redis);
        let output = single.arg("run").arg(&self.spec).output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let contents = redis.contents();
        assert!(contents.len() > 2000);
        contents
    }

    /// `deploy/metaflow/flow.py ARGS` against `redis`, in the job's folder.
    fn flow(&self, redis: &RedisServer, args: &[&str]) -> Command {
        let mut flow = Command::new(common::python());
        self.env(&mut flow, redis);
        flow.current_dir(self.dir.path())
            .env("USERNAME", "runner-tests")
            .env("METAFLOW_DEFAULT_DATASTORE", "local")
            .env("METAFLOW_DEFAULT_METADATA", "local")
            .arg(root().join("deploy/metaflow/flow.py"))
            .arg("--no-pylint")
            .args(args);
        flow
    }

    fn run_args(&self) -> Vec<String> {
        let mut args: Vec<String> =
            ["run", "--shards", "4", "--max-workers", "4", "--runner", env!("CARGO_BIN_EXE_runner")]
                .map(String::from)
                .to_vec();
        args.extend(["--spec".to_string(), self.spec.display().to_string()]);
        args
    }
}

fn all_output(output: &std::process::Output) -> String {
    format!("{}{}", stdout(output), stderr(output))
}

/// The Metaflow flow, run locally: the start step plans the job, four `foreach` branches, each
/// `runner run --plan PLAN --shard i/4`, leave Redis exactly as one run does, and the join adds
/// up the shards' reports.
#[test]
fn the_metaflow_flow_runs_four_shards() {
    if !python_has(&["metaflow"], common::PIP_INSTALL) {
        return;
    }
    let Some(one) = RedisServer::start() else { return };
    let Some(shards) = RedisServer::start() else { return };
    let job = FlowJob::new(1);
    let expected = job.one_run(&one);
    let args = job.run_args();
    let output = job.flow(&shards, &args.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
    let all = all_output(&output);
    assert!(output.status.success(), "{all}");
    assert!(all.contains("4 shards: 3000 rows read, 3000 rows written, 0 rejected"), "{all}");
    assert!(all.contains("plan written to"), "the start step plans the job: {all}");
    assert!(shards.contents() == expected, "the flow's four shards left other contents than one run");
}

/// A shard of the flow fails (an object it reads was replaced after the start step planned the
/// job, so the plan refuses it); once the object is back, `flow.py resume` reruns only that
/// shard, with the start step's plan, and Redis ends as one run leaves it.
#[test]
fn a_failed_shard_of_the_metaflow_flow_resumes() {
    if !python_has(&["metaflow"], common::PIP_INSTALL) {
        return;
    }
    let Some(one) = RedisServer::start() else { return };
    let Some(shards) = RedisServer::start() else { return };
    let job = FlowJob::new(4);
    let expected = job.one_run(&one);
    let plan = job.dir.path().join("job.plan");
    let mut args = job.run_args();
    args.extend(["--plan".to_string(), plan.display().to_string()]);
    let mut running = job.flow(&shards, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let child = running.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // The moment the plan is written (long before the branches start), the last object changes.
    common::wait_until("the start step's plan", std::time::Duration::from_secs(120), || plan.exists());
    let (key, bytes) = job.objects.last().unwrap();
    let changed = job.dir.path().join("changed.csv");
    let mut other = bytes.clone();
    let at = other.len() - 3;
    other[at] = if other[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(&changed, other).unwrap();
    job.s3.put("batch", key, &changed);
    let output = child.wait_with_output().unwrap();
    let all = all_output(&output);
    assert!(!output.status.success(), "a shard fails: {all}");
    assert!(all.contains("part-3.csv") && all.contains("changed"), "the failed shard names the object: {all}");

    let original = job.dir.path().join("part-3.csv");
    job.s3.put("batch", key, &original);
    let output = job.flow(&shards, &["resume"]).output().unwrap();
    let all = all_output(&output);
    assert!(output.status.success(), "{all}");
    assert!(all.contains("4 shards: "), "{all}");
    assert!(shards.contents() == expected, "the resumed flow left other contents than one run");
}
