#!/usr/bin/env python3
"""Sharded runs on one machine: the flagship pipeline as 1, 2 and 4 concurrent shard processes
into one Redis, with and without a plan file, against the single process.

On the same generated rows (one object in a local S3-protocol server) and an emptied Redis each
time, it runs the unsharded run, `runner run SPEC --shard i/N` for N in 1, 2, 4 (all N processes
at once), the same from a plan (`runner plan --shards N --out PLAN` first, then every shard
with `--plan PLAN`), and 4 shards with the column types declared. Per way it prints: the job's
rows/s (rows over the wall time, planning included, of the slowest shard), the bytes the S3
server sent (against the input's size), the CPU-seconds per million rows of each process
(`plan` first where there is one) and all of them together, and redis-server's. Then the cost of
a rerun after a kill: shard 0 of 4 from a plan (splits of 2 MiB) killed once half its splits
are recorded, rerun with the same plan, against its uninterrupted run: SETs (Redis's INFO
commandstats), CPU-seconds and seconds. Last, the time `runner plan` takes to plan.

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
        s3 = subprocess.Popen([os.path.join(ROOT, "target", "debug", "examples", "s3_server"), root, ACCESS, SECRET],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
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
            subprocess.run(["redis-cli", "-p", str(redis_port), "CONFIG", "RESETSTAT"], check=True, stdout=subprocess.DEVNULL)

        def served() -> int:
            s3.stdin.write("\n")
            s3.stdin.flush()
            return int(s3.stdout.readline().split()[1])

        def sets() -> int:
            info = subprocess.run(["redis-cli", "-p", str(redis_port), "INFO", "commandstats"], check=True,
                                  capture_output=True, text=True).stdout
            calls = {line.split(":")[0]: int(line.split("calls=")[1].split(",")[0]) for line in info.splitlines()
                     if line.startswith("cmdstat_")}
            return calls.get("cmdstat_set", 0) + calls.get("cmdstat_mset", 0)

        def wait(proc) -> float:
            """CPU-seconds of a child from the kernel's accounting once it exits (wait4's rusage)."""
            _, status, usage = os.wait4(proc.pid, 0)
            if status != 0:
                sys.exit(f"{proc.args[1]} failed: {proc.stderr.read()[-2000:]}")
            return usage.ru_utime + usage.ru_stime

        input_bytes = os.path.getsize(data)
        rows = []
        ways = [(None, spec, False), (1, spec, False), (2, spec, False), (4, spec, False),
                (1, spec, True), (2, spec, True), (4, spec, True), (4, declared, False)]
        for count, run_spec, planned in ways:
            flush()
            redis_before, bytes_before = cpu_seconds(redis.pid), served()
            started = time.perf_counter()
            cpus = []
            plan_args = []
            if planned:
                plan_file = os.path.join(work, f"plan-{count}.json")
                proc = subprocess.Popen([a.runner, "plan", run_spec, "--shards", str(count), "--out", plan_file], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                cpus.append(wait(proc))
                plan_args = ["--plan", plan_file]
            shards = [[]] if count is None else [["--shard", f"{i}/{count}"] for i in range(count)]
            procs = [subprocess.Popen([a.runner, "run", "--report", "json", *args, *plan_args, run_spec], env=env,
                                      stderr=subprocess.PIPE, text=True) for args in shards]
            cpus += [wait(proc) for proc in procs]
            wall = time.perf_counter() - started
            reports = [json.loads(proc.stderr.read().strip().splitlines()[-1]) for proc in procs]
            written = sum(r["rows_written"] for r in reports)
            redis_cpu = cpu_seconds(redis.pid) - redis_before
            label = "one process, unsharded" if count is None else f"{count} shard{'s' if count > 1 else ''}"
            if planned:
                label += ", from a plan"
            if run_spec == declared:
                label += ", types declared"
            rows.append((label, written, wall, served() - bytes_before, cpus, redis_cpu))

        print(f"\n{'run':<26} {'rows/s':>9} {'seconds':>7} {'S3 bytes':>8}  {'CPU-s per M rows, each process':<30} "
              f"{'all':>5} {'redis':>6}")
        for label, written, wall, fetched, cpus, redis_cpu in rows:
            per = " ".join(f"{c * 1e6 / written:.2f}" for c in cpus)
            print(f"{label:<26} {written / wall:>9.0f} {wall:>7.2f} {fetched / input_bytes:>7.2f}x  {per:<30} "
                  f"{sum(cpus) * 1e6 / written:>5.2f} {redis_cpu * 1e6 / written:>6.2f}")

        # A rerun after a kill at 50%: shard 0 of 4, its splits of 2 MiB.
        kill_spec = os.path.join(work, "kill.toml")
        with open(kill_spec, "w") as f:
            f.write(text.replace(f"split_bytes = {a.split_mb << 20}", f"split_bytes = {2 << 20}"))

        def plan_for_kill(name):
            plan_file = os.path.join(work, name)
            subprocess.run([a.runner, "plan", kill_spec, "--shards", "4", "--out", plan_file], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            with open(plan_file) as f:
                plan = json.load(f)
            mine = sum(1 for split in plan["source"]["splits"] if split["shard"] == 0)
            return plan_file, os.path.join(f"{plan_file}.checkpoints", plan["id"], "shard-0-of-4"), mine

        def shard0(plan_file):
            return subprocess.Popen([a.runner, "run", "--report", "json", "--plan", plan_file, "--shard", "0/4", kill_spec],
                                    env=env, stderr=subprocess.PIPE, text=True)

        flush()
        plan_file, _, mine = plan_for_kill("whole.json")
        started = time.perf_counter()
        whole_cpu = wait(shard0(plan_file))
        whole = (sets(), whole_cpu, time.perf_counter() - started)
        flush()
        plan_file, folder, mine = plan_for_kill("killed.json")
        proc = shard0(plan_file)
        recorded = lambda: len([n for n in os.listdir(folder) if n.startswith("split-")]) if os.path.isdir(folder) else 0  # noqa: E731
        while recorded() < (mine + 1) // 2 and proc.poll() is None:
            time.sleep(0.005)
        proc.kill()
        proc.wait()
        done = recorded()
        subprocess.run(["redis-cli", "-p", str(redis_port), "CONFIG", "RESETSTAT"], check=True, stdout=subprocess.DEVNULL)
        started = time.perf_counter()
        rerun = shard0(plan_file)
        rerun_cpu = wait(rerun)
        again = (sets(), rerun_cpu, time.perf_counter() - started)
        print(f"\nshard 0 of 4 from a plan ({mine} splits of 2 MiB), killed with {done} splits recorded, rerun:")
        print(f"{'':<22} {'SET calls':>9} {'CPU-s':>6} {'seconds':>7}")
        print(f"{'uninterrupted':<22} {whole[0]:>9} {whole[1]:>6.2f} {whole[2]:>7.2f}")
        print(f"{'rerun after the kill':<22} {again[0]:>9} {again[1]:>6.2f} {again[2]:>7.2f}")
        print(f"rerun / uninterrupted: SETs {again[0] / whole[0]:.2f}, CPU {again[1] / whole[1]:.2f}, "
              f"seconds {again[2] / whole[2]:.2f}")

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
