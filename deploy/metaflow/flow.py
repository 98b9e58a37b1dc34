"""The runner's pipeline as N shards on Metaflow, the engine the original flow ran on.

A `foreach` over the shard indexes runs `runner run SPEC --shard i/N` in each branch (each
branch reads its own part of the input; together they read it once), and the join adds up the
shards' JSON reports. Metaflow runs the branches: as local processes,

    USERNAME=me python3 deploy/metaflow/flow.py run --spec pipelines/iris.toml --shards 4 --max-workers 4

on Kubernetes (`--with kubernetes`) or AWS Batch (`--with batch`), in an image that holds
Python, Metaflow and the runner (the Dockerfile's runtime stage with python3 added). The
environment each branch needs (S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, REDIS_URL)
is the one the flow runs with; on Kubernetes, pass it with `@environment` or the cluster's
secrets. A failed shard fails its branch; `resume` reruns only what failed (the keys a shard
writes are idempotent).
"""
import json
import subprocess

from metaflow import FlowSpec, Parameter, step


class ShardedPipelineFlow(FlowSpec):
    spec = Parameter("spec", help="the pipeline spec each shard runs", default="pipelines/iris.toml")
    shards = Parameter("shards", help="how many shards", default=4, type=int)
    runner = Parameter("runner", help="the runner command", default="runner")
    metrics = Parameter("metrics", help="a Prometheus Pushgateway each shard pushes to (none: '')", default="")

    @step
    def start(self):
        if self.shards < 1:
            raise ValueError("--shards must be at least 1")
        self.indexes = list(range(self.shards))
        self.next(self.shard, foreach="indexes")

    @step
    def shard(self):
        """One shard: its part of the input, through the whole pipeline."""
        self.shard_index = self.input
        command = [self.runner, "run", self.spec, "--shard", f"{self.shard_index}/{self.shards}", "--report", "json"]
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
