#!/usr/bin/env python3
"""Sharded runs on one machine: the flagship pipeline as 1, 2 and 4 concurrent shard processes
into one Redis, against the single process.

On the same generated rows (one object in a local S3-protocol server) and an emptied Redis each
time, it runs `runner run SPEC --shard i/N` for N in 1, 2, 4 (all N processes at once) and the
unsharded run, and prints per N: the job's rows/s (rows over the wall time of the slowest
shard), the CPU-seconds per million rows of each shard process and of redis-server, and the
time `runner plan` takes to plan (list the input and cut it into splits), the overhead each
shard pays before reading. A last run of 4 shards declares the column types, so no shard reads
the whole input to type them.

Usage (from the repository root; builds the release runner):
  python3 bench/shards.py [--rows 4000000] [--runner target/release/runner]

Needs: redis-server; Python with boto3 (the object is uploaded); the release runner and the
plugins (built by this script); the s3_server example (built by this script). On 2 cores, shards compete with redis-server for the same
cores: the scaling shown is this machine's, not the design's.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from end_to_end import ACCESS, SECRET, free_port, put_object, wait_port  # noqa: E402



def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4_000_000)
    p.add_argument("--runner", help="a release runner to use (default: build target/release/runner)")
    p.add_argument("--split-mb", type=int, default=16, help="split_bytes of the source, in MiB")
    a = p.parse_args()

    subprocess.run(["cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip2"], cwd=os.path.join(ROOT, "plugins"), check=True)
    if a.runner is None:
        subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "runner", "--bin", "runner"], cwd=ROOT, check=True)
        a.runner = os.path.join(ROOT, "target", "release", "runner")
    subprocess.run(["cargo", "build", "--quiet", "-p", "runner", "--example", "s3_server"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="bench-shards-")
    servers = []
    try:
        root = os.path.join(work, "s3")
        os.makedirs(os.path.join(root, "batch"))
        data = os.path.join(work, "rows.csv")
        with open(data, "w") as out:
            subprocess.run([sys.executable, "bench/make_rows.py", "models/iris/iris.csv", str(a.rows), "--seed", "0"], cwd=ROOT, stdout=out, check=True)
        s3 = subprocess.Popen([os.path.join(ROOT, "target", "debug", "examples", "s3_server"), root, ACCESS, SECRET], stdout=subprocess.PIPE, text=True)
        servers.append(s3)
        endpoint = s3.stdout.readline().strip().removeprefix("listening on ")
        # Uploaded, so the server keeps each object's ETag as MinIO does (see end_to_end.py).
        put_object(endpoint, "data/rows.csv", data)
        put_object(endpoint, "artifact/model.json", os.path.join(ROOT, "models", "iris", "model.json"))
        redis_port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers.append(redis)
        wait_port(redis_port, "redis-server")
        redis_url = f"redis://127.0.0.1:{redis_port}/0"

        spec = os.path.join(work, "rows.toml")
        with open(os.path.join(ROOT, "pipelines", "iris.toml")) as f:
            text = f.read()
        text = text.replace('data/iris.csv" }', f'data/rows.csv", split_bytes = {a.split_mb << 20} }}')
        text = text.replace("../plugins/target", os.path.join(ROOT, "plugins", "target"))
        with open(spec, "w") as f:
            f.write(text)
        env = dict(os.environ, S3_ENDPOINT=endpoint, AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET,
                   REDIS_URL=redis_url, RUST_LOG="error", RUNNER_CACHE_DIR=os.path.join(work, "cache"))
        print(f"{a.rows} rows, {os.path.getsize(data) / 1e6:.1f} MB of CSV, splits of {a.split_mb} MiB, {os.cpu_count()} cores", flush=True)
        subprocess.run([a.runner, "validate", spec], env=env, check=True, stdout=subprocess.DEVNULL)  # compile the plugin once

        # The same input with every column declared: no typing pass (each shard reads only its part).
        declared = os.path.join(work, "declared.toml")
        with open(declared, "w") as f:
            f.write(text.replace('split_bytes = ', 'columns = { sepal_length = "f64", sepal_width = "f64", '
                                 'petal_length = "f64", petal_width = "f64" }, split_bytes = '))
        # Planning alone: the source and a discard sink, no plugin to load.
        plain = os.path.join(work, "plan.toml")
        with open(plain, "w") as f:
            f.write(f'[s3]\nendpoint = "{endpoint}"\n\n[source]\nkind = "csv"\n'
                    f'config = {{ url = "s3://batch/data/rows.csv", split_bytes = {a.split_mb << 20} }}\n\n'
                    '[sink]\nkind = "discard"\n')
        local = os.path.join(work, "plan-local.toml")
        with open(local, "w") as f:
            f.write(f'[source]\nkind = "csv"\nconfig = {{ url = "{data}", split_bytes = {a.split_mb << 20} }}\n\n'
                    '[sink]\nkind = "discard"\n')
        subprocess.run([a.runner, "--version"], check=True, stdout=subprocess.DEVNULL)
        plans, local_plans, starts = [], [], []
        for _ in range(7):
            for spec_file, times in ((None, starts), (plain, plans), (local, local_plans)):
                command = [a.runner, "--version"] if spec_file is None else [a.runner, "plan", "--shards", "4", spec_file]
                started = time.perf_counter()
                subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
                times.append(time.perf_counter() - started)

        def flush():
            subprocess.run(["redis-cli", "-p", str(redis_port), "FLUSHALL"], check=True, stdout=subprocess.DEVNULL)

        rows = []
        for count, run_spec in ((None, spec), (1, spec), (2, spec), (4, spec), (4, declared)):
            flush()
            redis_before = cpu_seconds(redis.pid)
            shards = [[]] if count is None else [["--shard", f"{i}/{count}"] for i in range(count)]
            started = time.perf_counter()
            procs = [subprocess.Popen([a.runner, "run", "--report", "json", *args, run_spec], env=env, stderr=subprocess.PIPE, text=True)
                     for args in shards]
            cpus = []
            for proc in procs:
                # CPU of the child from the kernel's accounting once it exits (wait4's rusage).
                _, status, usage = os.wait4(proc.pid, 0)
                cpus.append(usage.ru_utime + usage.ru_stime)
                if status != 0:
                    sys.exit(f"a shard failed: {proc.stderr.read()[-2000:]}")
            wall = time.perf_counter() - started
            reports = [json.loads(proc.stderr.read().strip().splitlines()[-1]) for proc in procs]
            written = sum(r["rows_written"] for r in reports)
            redis_cpu = cpu_seconds(redis.pid) - redis_before
            label = "one process, unsharded" if count is None else f"{count} shard{'s' if count > 1 else ''}"
            if run_spec == declared:
                label += ", types declared"
            rows.append((label, written, wall, cpus, redis_cpu))

        print(f"\n{'run':<24} {'rows/s':>10} {'seconds':>8}  {'CPU-s per M rows, each process':<32} {'redis-server CPU-s/M':>20}")
        for label, written, wall, cpus, redis_cpu in rows:
            per = " ".join(f"{c * 1e6 / written:.2f}" for c in cpus)
            print(f"{label:<24} {written / wall:>10.0f} {wall:>8.2f}  {per:<32} {redis_cpu * 1e6 / written:>20.2f}")
        median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
        print(f"\nplanning, `runner plan --shards 4` (no plugin), medians of 7 processes: the object on the local S3 "
              f"server {median(plans) * 1e3:.0f} ms (min {min(plans) * 1e3:.0f}), the same file read locally "
              f"{median(local_plans) * 1e3:.0f} ms (min {min(local_plans) * 1e3:.0f}); `runner --version` alone "
              f"{median(starts) * 1e3:.0f} ms")
    finally:
        for server in servers:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
