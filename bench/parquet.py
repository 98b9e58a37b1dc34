#!/usr/bin/env python3
"""Parquet against CSV as the source of the flagship job: rows/s and peak RSS, side by side.

For each size (--rows, default 1M and 10M): makes that many Iris-like rows (bench/make_rows.py),
writes them as CSV and, with pyarrow's defaults (row groups of 1 Mi rows, snappy), as Parquet,
in a temporary directory; then --runs times, taking turns, `runner run` (release build) of the
flagship pipeline (predictor plugin, row keys) reading each file, into an emptied redis-server
and into the `discard` sink. Each run's wall time and peak RSS (the runner's, from GNU time: a
child forked from this Python process would inherit its high-water mark through exec) are
recorded; the table prints the medians, rows/s and the largest RSS per way. One run first,
unmeasured, fills the compiled-plugin cache.

Usage (from the repository root):
  python3 bench/parquet.py [--rows 1000000 10000000] [--runs 3] [--runner target/release/runner]

Needs: redis-server (apt-get install redis-server), GNU time (/usr/bin/time); Python with pyarrow (.venv from .ci/run);
the release runner and plugins (built unless --runner is given).
"""
import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int) -> None:
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"redis-server did not start on port {port}")


def spec(work: str, name: str, kind: str, data: str, sink: str) -> str:
    """The flagship pipeline reading `data` as `kind`, writing to `sink` (redis or discard)."""
    with open(os.path.join(ROOT, "pipelines", "iris.toml")) as f:
        text = f.read()
    text = text.replace('plugin_dir = "../plugins/target/wasm32-wasip2/release"',
                        f'plugin_dir = "{os.path.join(ROOT, "plugins/target/wasm32-wasip2/release")}"')
    text = text.replace('kind = "csv"\nconfig = { url = "s3://${S3_BUCKET:-batch}/data/iris.csv" }',
                        f'kind = "{kind}"\nconfig = {{ url = "{data}" }}')
    text = text.replace('assets = { model = "s3://${S3_BUCKET:-batch}/artifact/model.json" }',
                        f'assets = {{ model = "{os.path.join(ROOT, "models/iris/model.json")}" }}')
    if sink == "discard":
        text = text.replace('kind = "redis"\nconfig = { url = "${REDIS_URL:-redis://127.0.0.1:6379/0}", key = "key", value = "label" }',
                            'kind = "discard"')
    assert f'kind = "{kind}"' in text and (sink == "redis" or 'kind = "discard"' in text), "pipelines/iris.toml changed"
    path = os.path.join(work, f"{name}.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def timed(command, env):
    """Wall seconds and peak RSS (MiB) of one process, measured by /usr/bin/time."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "RSS_KB=%M", *command], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)}: exit {done.returncode}: {done.stderr[-2000:]}")
    return seconds, int(re.findall(r"RSS_KB=(\d+)", done.stderr)[-1]) / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--runner", help="a release runner to use (default: build target/release/runner)")
    a = p.parse_args()

    subprocess.run(["cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip2"], cwd=os.path.join(ROOT, "plugins"), check=True)
    if a.runner is None:
        subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "runner", "--bin", "runner"], cwd=ROOT, check=True)
        a.runner = os.path.join(ROOT, "target", "release", "runner")
    work = tempfile.mkdtemp(prefix="bench-parquet-")
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {}
    try:
        wait_port(port)
        env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{port}/0")
        for rows in a.rows:
            csv_path = os.path.join(work, f"rows-{rows}.csv")
            with open(csv_path, "w") as out:
                subprocess.run([sys.executable, "bench/make_rows.py", "models/iris/iris.csv", str(rows), "--seed", "0"],
                               cwd=ROOT, stdout=out, check=True)
            parquet_path = os.path.join(work, f"rows-{rows}.parquet")
            pq.write_table(pacsv.read_csv(csv_path), parquet_path)
            sizes = {"csv": os.path.getsize(csv_path), "parquet": os.path.getsize(parquet_path)}
            print(f"{rows} rows: CSV {sizes['csv'] / 2**20:.1f} MiB, Parquet {sizes['parquet'] / 2**20:.1f} MiB "
                  f"({pq.ParquetFile(parquet_path).metadata.num_row_groups} row groups)", flush=True)
            ways = {}
            for kind, data in (("csv", csv_path), ("parquet", parquet_path)):
                for sink in ("redis", "discard"):
                    ways[(kind, sink)] = spec(work, f"{kind}-{sink}-{rows}", kind, data, sink)
            subprocess.run([a.runner, "run", "--quiet", ways[("csv", "discard")]], env=env, check=True, capture_output=True)
            for run in range(a.runs):
                for (kind, sink), path in ways.items():
                    if sink == "redis":
                        subprocess.run(["redis-cli", "-p", str(port), "FLUSHALL"], stdout=subprocess.DEVNULL, check=True)
                    seconds, rss = timed([a.runner, "run", "--quiet", path], env)
                    results.setdefault((rows, kind, sink), []).append((seconds, rss))
                    print(f"run {run + 1} {rows:>9} {kind:<8} -> {sink:<8} {seconds:7.3f} s {rss:7.1f} MiB", flush=True)
    finally:
        redis.kill()
        redis.wait()
        subprocess.run(["rm", "-rf", work])

    print()
    print(f"{a.runs} runs each, taking turns; medians; peak RSS the largest of the runs")
    print(f"{'rows':>10} {'sink':<8} | {'CSV s':>7} {'rows/s':>10} {'RSS MiB':>8} | {'Parquet s':>9} {'rows/s':>10} {'RSS MiB':>8} | {'Parquet/CSV':>11}")
    for rows in a.rows:
        for sink in ("redis", "discard"):
            line = f"{rows:>10} {sink:<8}"
            rates = []
            for kind in ("csv", "parquet"):
                runs = results[(rows, kind, sink)]
                median = statistics.median(s for s, _ in runs)
                rates.append(rows / median)
                width = 7 if kind == "csv" else 9
                line += f" | {median:{width}.3f} {rows / median:10.0f} {max(r for _, r in runs):8.1f}"
            line += f" | {rates[1] / rates[0]:11.2f}"
            print(line)
    for kind in ("csv", "parquet"):
        if len(a.rows) > 1:
            small, large = min(a.rows), max(a.rows)
            for sink in ("redis", "discard"):
                ratio = max(r for _, r in results[(large, kind, sink)]) / max(r for _, r in results[(small, kind, sink)])
                print(f"peak RSS {kind} -> {sink}: {large} rows / {small} rows = {ratio:.2f}")


if __name__ == "__main__":
    main()
