#!/usr/bin/env python3
"""End-to-end benchmark on one machine: the runner against the original flow and Redis itself.

In one run, on the same generated rows, the same bucket and the same Redis server:
  1. makes N Iris-like rows (bench/make_rows.py) and puts them, with the model, in bucket `batch`
     on a local S3-protocol server (s3s-fs);
  2. runs `runner run pipelines/iris.toml` (release build): S3 -> predictor -> row keys -> Redis,
     counting the CPU seconds of the runner and of redis-server; then the same without scoring;
  3. runs the original flow (seed_flow.py) into another Redis database;
  4. runs `redis-benchmark -P 64 -t set` with N random keys;
  5. scores the rows with the predictor in WASM and natively (calls alone), and with onnxruntime;
  6. times `runner run pipelines/iris-local.toml` (150 rows) with an empty and a warm cache;
then prints one table: rows/s and peak RSS of each, and the ratios.

Usage (from the repository root):
  python3 bench/end_to_end.py [--rows 1000000] [--seed-flow ../shared/reference/seed_flow.py]
                              [--skip-seed-flow] [--score-rows 1000000]

Needs: redis-server and redis-benchmark (apt-get install redis-server); s3s-fs (installed into
target/bench-tools on first use: cargo install s3s-fs --version 0.14.1 --features binary);
Python with pandas, xgboost, boto3, redis, onnxruntime (models/iris/requirements.txt + boto3 redis).
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from scoring import build, print_ratios, print_runs, wasm_and_native

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCESS, SECRET = "bench-access", "bench-secret-key"
TOOLS = os.path.join(ROOT, "target", "bench-tools")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, what: str):
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"{what} did not start on port {port}")


def peak_rss_mb(args, env=None):
    """Runs under GNU time; returns (seconds, peak RSS MB, stderr)."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "RSS_KB=%M CPU=%U %S", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    rss = int(re.findall(r"RSS_KB=(\d+)", done.stderr)[-1]) / 1024
    return seconds, rss, done.stderr


def cpu_of(stderr: str) -> float:
    """User + system CPU seconds, from GNU time's line in `stderr` (see peak_rss_mb)."""
    user, system = re.findall(r"CPU=([\d.]+) ([\d.]+)", stderr)[-1]
    return float(user) + float(system)


def process_cpu(pid: int) -> float:
    """CPU seconds a running process has used so far (user + system)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def s3s_fs() -> str:
    found = shutil.which("s3s-fs") or os.path.join(TOOLS, "bin", "s3s-fs")
    if not os.path.exists(found):
        print("installing s3s-fs into target/bench-tools (once)...", flush=True)
        subprocess.run(
            ["cargo", "install", "--quiet", "--root", TOOLS, "s3s-fs", "--version", "0.14.1", "--features", "binary", "--locked"],
            check=True,
        )
    return found


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--seed-flow", default=os.path.join(ROOT, "..", "shared", "reference", "seed_flow.py"))
    p.add_argument("--skip-seed-flow", action="store_true", help="do not run the original flow")
    p.add_argument("--score-rows", type=int, default=1_000_000, help="rows for the scoring-alone measurements")
    a = p.parse_args()

    build()
    s3s = s3s_fs()
    work = tempfile.mkdtemp(prefix="bench-e2e-")
    servers = []
    try:
        # Services on free loopback ports, stopped by pid at the end.
        redis_port, s3_port = free_port(), free_port()
        servers.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        root = os.path.join(work, "s3")
        os.makedirs(os.path.join(root, "batch", "data"))
        os.makedirs(os.path.join(root, "batch", "artifact"))
        servers.append(subprocess.Popen(
            [s3s, "--host", "127.0.0.1", "--port", str(s3_port), "--access-key", ACCESS, "--secret-key", SECRET, root],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(redis_port, "redis-server")
        wait_port(s3_port, "s3s-fs")
        endpoint, redis_url = f"http://127.0.0.1:{s3_port}", f"redis://127.0.0.1:{redis_port}"

        data = os.path.join(root, "batch", "data", "iris.csv")
        with open(data, "w") as out:
            subprocess.run([sys.executable, "bench/make_rows.py", "models/iris/iris.csv", str(a.rows), "--seed", "0"], cwd=ROOT, stdout=out, check=True)
        for name in ("model.onnx", "model.json"):
            shutil.copy(os.path.join(ROOT, "models", "iris", name), os.path.join(root, "batch", "artifact", name))
        print(f"{a.rows} rows, {os.path.getsize(data) / 1e6:.1f} MB of CSV in s3://batch/data/iris.csv", flush=True)

        results = {}
        env = dict(os.environ, S3_ENDPOINT=endpoint, AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET,
                   REDIS_URL=f"{redis_url}/0", RUST_LOG="error", RUNNER_CACHE_DIR=os.path.join(work, "cache"))
        # Compile the plugin into the cache first: the timed run measures the pipeline, not Cranelift.
        peak_rss_mb(["target/release/runner", "validate", "pipelines/iris.toml"], env)
        redis_pid, redis_cpu = servers[0].pid, process_cpu(servers[0].pid)
        seconds, rss, err = peak_rss_mb(["target/release/runner", "run", "--report", "json", "pipelines/iris.toml"], env)
        report = json.loads(err.strip().splitlines()[-2])  # the JSON line, before GNU time's
        results["runner"] = (a.rows / seconds, rss, seconds)
        # Where the time goes: CPU seconds of the runner and of redis-server against what the
        # machine's cores offer over the run; and the same run without the score step.
        cpu = {"runner": cpu_of(err), "redis-server": process_cpu(redis_pid) - redis_cpu, "wall": seconds}
        unscored = os.path.join(work, "unscored.toml")
        with open(unscored, "w") as f:
            f.write(UNSCORED.format())
        seconds, rss, _ = peak_rss_mb(["target/release/runner", "run", unscored], dict(env, REDIS_URL=f"{redis_url}/2"))
        results["runner without the score step"] = (a.rows / seconds, rss, seconds)

        if not a.skip_seed_flow:
            seed_env = dict(env, AWS_EC2_METADATA_DISABLED="true")
            seconds, rss, _ = peak_rss_mb([sys.executable, a.seed_flow, "--endpoint", endpoint, "--bucket", "batch",
                                           "--redis", f"{redis_url}/1"], seed_env)
            results["original flow (seed_flow.py)"] = (a.rows / seconds, rss, seconds)

        done = subprocess.run(["redis-benchmark", "-p", str(redis_port), "-P", "64", "-t", "set", "-n", str(a.rows),
                               "-r", str(a.rows), "-q"], capture_output=True, text=True, check=True)
        rate = float(re.findall(r"SET: ([\d.]+) requests per second", done.stdout)[-1])
        results["redis-benchmark -P 64 -t set"] = (rate, None, a.rows / rate)

        # The first --score-rows rows: per-row scoring costs do not need ten million.
        csv_copy = os.path.join(work, "rows.csv")
        with open(data) as src, open(csv_copy, "w") as dst:
            for i, line in enumerate(src):
                if i > a.score_rows:
                    break
                dst.write(line)
        # Scoring alone, WASM and native under the same conditions (see bench/scoring.py).
        runs = wasm_and_native(os.path.join(ROOT, "models/iris/model.onnx"), csv_copy, env["RUNNER_CACHE_DIR"])
        median = {name: statistics.median(values) for name, values in runs.items()}
        wasm_us, native_us, program_us = median["plugin calls"], median["same code, native"], median["same code, WASM"]
        ort = subprocess.run([sys.executable, "-c", ORT, csv_copy], cwd=ROOT, capture_output=True, text=True, check=True)
        ort_us = float(ort.stdout)

        cold_cache = os.path.join(work, "cold")
        local_env = dict(os.environ, RUNNER_CACHE_DIR=cold_cache, RUST_LOG="error")
        cold, _, _ = peak_rss_mb(["target/release/runner", "run", "-q", "pipelines/iris-local.toml"], local_env)
        warm = min(peak_rss_mb(["target/release/runner", "run", "-q", "pipelines/iris-local.toml"], local_env)[0] for _ in range(5))

        runner_rate = results["runner"][0]
        print(f"\nEnd to end, {a.rows} rows (S3 -> score -> key -> Redis), {os.cpu_count()} cores")
        print(f"{'what':<34} {'rows/s':>10} {'seconds':>9} {'peak RSS':>10}")
        for name, (rate, rss, seconds) in results.items():
            shown = f"{rss:.0f} MB" if rss is not None else "-"
            print(f"{name:<34} {rate:>10.0f} {seconds:>9.2f} {shown:>10}")
        print("\nratios")
        if "original flow (seed_flow.py)" in results:
            print(f"  runner / original flow:      {runner_rate / results['original flow (seed_flow.py)'][0]:.1f}x")
        print(f"  runner / redis-benchmark:    {runner_rate / rate:.2f}")
        print(f"  scoring, WASM / onnxruntime: {wasm_us / ort_us:.2f}  (onnxruntime {ort_us:.2f} us/row)")
        print(f"  scoring, us/row (medians): the plugin's calls {wasm_us:.3f}, same code native {native_us:.3f},"
              f" in WASM {program_us:.3f}; class ids {median['plugin, class ids']:.3f};"
              f" the boundary alone {median['boundary alone']:.3f}")
        print_ratios(runs, indent="  ")
        print_runs(runs)
        cores = os.cpu_count()
        used = cpu["runner"] + cpu["redis-server"]
        print(f"\nCPU during the runner's run: runner {cpu['runner']:.2f} s + redis-server {cpu['redis-server']:.2f} s"
              f" = {used:.2f} s of {cores * cpu['wall']:.2f} s available ({cores} cores x {cpu['wall']:.2f} s):"
              f" {100 * used / (cores * cpu['wall']):.0f}% busy")
        print("\nrunner steps (busy time, summed over workers)")
        for s in report["steps"]:
            print(f"  {s['name']:<8} {s['implementation']:<28} x{s['workers']}  {s['busy_seconds']:.2f} s")
        print(f"\nrunner run pipelines/iris-local.toml (150 rows): cold {cold * 1e3:.0f} ms (empty cache), warm {warm * 1e3:.0f} ms")
    finally:
        for server in servers:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


# pipelines/iris.toml without the score step: the same keys, a feature as the value.
UNSCORED = """
[pipeline]
name = "iris-unscored"
[s3]
endpoint = "${{S3_ENDPOINT}}"
[source]
kind = "csv"
config = {{ url = "s3://batch/data/iris.csv" }}
[[transform]]
name = "key"
kind = "row-key"
config = {{ columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"] }}
[sink]
kind = "redis"
config = {{ url = "${{REDIS_URL}}", key = "key", value = "sepal_length" }}
"""

# onnxruntime on the same rows, batches of 4096 as the runner: microseconds per row.
ORT = """
import sys, time, numpy as np, onnxruntime, pandas as pd
x = pd.read_csv(sys.argv[1]).to_numpy(dtype=np.float32)
s = onnxruntime.InferenceSession('models/iris/model.onnx', providers=['CPUExecutionProvider'])
name = s.get_inputs()[0].name
s.run(None, {name: x[:4096]})
t = time.perf_counter()
for i in range(0, len(x), 4096):
    s.run(None, {name: x[i:i + 4096]})
print((time.perf_counter() - t) * 1e6 / len(x))
"""

if __name__ == "__main__":
    main()
