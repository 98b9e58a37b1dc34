"""The runner's pipeline as N shards on Metaflow, the engine the original flow ran on.

The start step plans the job once (`runner plan SPEC --shards N --out PLAN`: the input listed
and typed, each object's version pinned); a `foreach` over the shard indexes runs
`runner run SPEC --plan PLAN --shard i/N` in each branch (each branch reads only its own splits;
together they read the input once), and the join adds up the shards' JSON reports. Metaflow
runs the branches: as local processes,

    USERNAME=me python3 deploy/metaflow/flow.py run --spec pipelines/iris.toml --shards 4 --max-workers 4

on Kubernetes (`--with kubernetes`) or AWS Batch (`--with batch`), in an image that holds
Python, Metaflow and the runner (the Dockerfile's runtime stage with python3 added). The
environment each branch needs (S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, REDIS_URL)
is the one the flow runs with; on Kubernetes, pass it with `@environment` or the cluster's
secrets, and give `--plan` an `s3://` URL every branch can read.

A failed shard fails its branch; `python3 deploy/metaflow/flow.py resume` reruns only what
failed, with the start step's plan, so the shard skips the splits its checkpoints record as
done (docs/spec.md, "Checkpoints") and writes the rest.
"""
import json
import subprocess

from metaflow import FlowSpec, Parameter, current, step


class ShardedPipelineFlow(FlowSpec):
    spec = Parameter("spec", help="the pipeline spec each shard runs", default="pipelines/iris.toml")
    shards = Parameter("shards", help="how many shards", default=4, type=int)
    runner = Parameter("runner", help="the runner command", default="runner")
    metrics = Parameter("metrics", help="a Prometheus Pushgateway each shard pushes to (none: '')", default="")
    plan = Parameter(
        "plan",
        help="where the start step writes the shards' plan, a path or s3:// (default: <flow>-<run id>.plan here)",
        default="",
    )

    @step
    def start(self):
        if self.shards < 1:
            raise ValueError("--shards must be at least 1")
        self.plan_url = self.plan or f"{current.flow_name}-{current.run_id}.plan"
        command = [self.runner, "plan", self.spec, "--shards", str(self.shards), "--out", self.plan_url]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"planning failed (exit {done.returncode}): {done.stderr[-2000:]}")
        print(done.stdout.strip().splitlines()[-1])
        self.indexes = list(range(self.shards))
        self.next(self.shard, foreach="indexes")

    @step
    def shard(self):
        """One shard: its part of the input, through the whole pipeline."""
        self.shard_index = self.input
        command = [self.runner, "run", self.spec, "--plan", self.plan_url, "--shard", f"{self.shard_index}/{self.shards}"]
        command += ["--report", "json"]
        if self.metrics:
            command += ["--metrics", self.metrics]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = done.stderr.strip().splitlines()
        if done.returncode != 0:
            raise RuntimeError(f"shard {self.shard_index}/{self.shards} failed (exit {done.returncode}): {done.stderr[-2000:]}")
        self.report = json.loads(lines[-1])
        self.next(self.join)

    @step
    def join(self, inputs):
        """The job's totals: the shards' reports added up."""
        reports = sorted((i.report for i in inputs), key=lambda r: r["shard"]["index"])
        self.shard_reports = reports
        self.rows_read = sum(r["rows_read"] for r in reports)
        self.rows_written = sum(r["rows_written"] for r in reports)
        self.rejected = sum(s["rejected"] for r in reports for s in r["steps"])
        self.seconds = max(r["seconds"] for r in reports)
        self.next(self.end)

    @step
    def end(self):
        print(
            f"{len(self.shard_reports)} shards: {self.rows_read} rows read, {self.rows_written} rows written, "
            f"{self.rejected} rejected, slowest shard {self.seconds:.3f} s"
        )


if __name__ == "__main__":
    ShardedPipelineFlow()
