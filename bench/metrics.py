#!/usr/bin/env python3
"""What pushing metrics costs a run: the same run with and without --metrics, side by side.

On N generated Iris-like rows (bench/make_rows.py) in a local CSV file, `runner run` (release
build) scores every row with the predictor plugin, keys it, and writes it into an emptied
redis-server, --runs times each way, taking turns: without metrics, then with `--metrics` to a
local Prometheus Pushgateway, pushed every second (`--metrics-seconds 1`). Prints each run's
wall time and the medians, rows/s, the difference, and the spread of the runs without metrics
(the run-to-run noise the difference is to be read against). One run first, unmeasured, fills
the compiled-plugin cache.

Usage (from the repository root):
  python3 bench/metrics.py [--rows 1000000] [--runs 5] [--runner target/release/runner]

Needs: redis-server and prometheus-pushgateway (apt-get install redis-server
prometheus-pushgateway); the release runner and plugins (built unless --runner is given).
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, what: str) -> None:
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not start on port {port}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--runner", help="a release runner to use (default: build target/release/runner)")
    a = p.parse_args()

    subprocess.run(["cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip2"], cwd=os.path.join(ROOT, "plugins"), check=True)
    if a.runner is None:
        subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "runner", "--bin", "runner"], cwd=ROOT, check=True)
        a.runner = os.path.join(ROOT, "target", "release", "runner")
    work = tempfile.mkdtemp(prefix="bench-metrics-")
    servers = []
    try:
        data = os.path.join(work, "rows.csv")
        with open(data, "w") as out:
            subprocess.run([sys.executable, "bench/make_rows.py", "models/iris/iris.csv", str(a.rows), "--seed", "0"], cwd=ROOT, stdout=out, check=True)
        redis_port, gateway_port = free_port(), free_port()
        servers.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        servers.append(subprocess.Popen(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{gateway_port}"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(redis_port, "redis-server")
        wait_port(gateway_port, "prometheus-pushgateway")
        with open(os.path.join(ROOT, "pipelines", "iris.toml")) as f:
            text = f.read()
        text = text.replace('plugin_dir = "../plugins/target/wasm32-wasip2/release"',
                            f'plugin_dir = "{os.path.join(ROOT, "plugins/target/wasm32-wasip2/release")}"')
        text = text.replace('config = { url = "s3://${S3_BUCKET:-batch}/data/iris.csv" }', f'config = {{ url = "{data}" }}')
        text = text.replace('assets = { model = "s3://${S3_BUCKET:-batch}/artifact/model.json" }',
                            f'assets = {{ model = "{os.path.join(ROOT, "models/iris/model.json")}" }}')
        spec = os.path.join(work, "rows.toml")
        with open(spec, "w") as f:
            f.write(text)
        env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")
        ways = {"without metrics": [], "with metrics every 1 s": []}
        pushing = ["--metrics", f"http://127.0.0.1:{gateway_port}", "--metrics-seconds", "1"]
        # Once unmeasured: the first run compiles the plugins into the cache.
        subprocess.run([a.runner, "run", "--quiet", spec], env=env, check=True, capture_output=True)
        for run in range(a.runs):
            for way, extra in (("without metrics", []), ("with metrics every 1 s", pushing)):
                subprocess.run(["redis-cli", "-p", str(redis_port), "FLUSHALL"], stdout=subprocess.DEVNULL, check=True)
                started = time.perf_counter()
                done = subprocess.run([a.runner, "run", "--quiet", *extra, spec], env=env, capture_output=True, text=True)
                seconds = time.perf_counter() - started
                if done.returncode != 0:
                    sys.exit(f"{way}: exit {done.returncode}: {done.stderr[-2000:]}")
                ways[way].append(seconds)
                print(f"run {run + 1} {way:<24} {seconds:6.3f} s", flush=True)
        print()
        print(f"{a.rows} rows, {a.runs} runs each, taking turns")
        print(f"{'':<24} {'median s':>9} {'rows/s':>10} {'min s':>7} {'max s':>7}")
        for way, times in ways.items():
            median = statistics.median(times)
            print(f"{way:<24} {median:9.3f} {a.rows / median:10.0f} {min(times):7.3f} {max(times):7.3f}")
        base, pushed = (statistics.median(t) for t in ways.values())
        spread = (max(ways["without metrics"]) - min(ways["without metrics"])) / base * 100
        print(f"difference: {(pushed - base) / base * 100:+.1f}% (runs without metrics spread over {spread:.1f}%)")
    finally:
        for server in servers:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
