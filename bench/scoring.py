#!/usr/bin/env python3
"""Scoring benchmark: the predictor plugin in WebAssembly, the same code natively, tract's own
tree op, and onnxruntime, on the same rows and the same model. Prints one table.

Usage (from the repository root; builds what it needs in release mode):
  python3 bench/scoring.py [--rows 100000] [--model models/iris/model.onnx] [--xgboost-model models/iris/model.json]
                           [--tract-rows 2000]

Needs: Python with onnxruntime, numpy and pandas (models/iris/requirements.txt).
Per-row times divide the time spent scoring by the rows scored; model loading is excluded
everywhere. tract's own tree op runs on fewer rows (--tract-rows): it takes milliseconds a row.

WASM against native is measured under the same conditions: all rows parsed into batches first,
then only the scoring calls timed, on one thread with nothing else running
(runner/examples/score_plugin.rs and plugins/onnx-predictor/examples/score.rs). This machine's
speed drifts by 20% from one second to the next, so each is run in several processes, taking
turns, and the medians are compared.
"""
import statistics
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]
BATCH = 4096


def sh(*args, cwd=ROOT, **kwargs):
    return subprocess.run(args, check=True, cwd=cwd, **kwargs)


def build():
    plugins = os.path.join(ROOT, "plugins")
    sh("cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip2", cwd=plugins)
    sh("cargo", "build", "--quiet", "--release", "--example", "score", "-p", "onnx-predictor", cwd=plugins)
    # The same benchmark program for WebAssembly, run by wasi_command: the code without the boundary.
    sh("cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip2", "--example", "score", "-p", "onnx-predictor", cwd=plugins)
    sh("cargo", "build", "--quiet", "--release", "-p", "runner", "--bin", "runner", "--example", "score_plugin",
       "--example", "wasi_command")


def make_rows(rows: int, path: str):
    with open(path, "w") as out:
        sh(sys.executable, "bench/make_rows.py", "models/iris/iris.csv", str(rows), "--seed", "0", stdout=out)


def write_spec(path: str, data: str, model: str, engine: str):
    with open(path, "w") as f:
        f.write(
            f"""[pipeline]
batch_rows = {BATCH}
plugin_dir = "{ROOT}/plugins/target/wasm32-wasip2/release"

[source]
kind = "csv"
config = {{ url = "{data}" }}

[[transform]]
name = "score"
plugin = "onnx-predictor"
assets = {{ model = "{model}" }}
[transform.config]
features = {json.dumps(FEATURES)}
classes = {json.dumps(CLASSES)}
tree_engine = "{engine}"

[sink]
kind = "discard"
"""
        )


def runner(spec: str, cache: str) -> dict:
    """Runs the release runner; returns its JSON report and the wall time."""
    env = dict(os.environ, RUNNER_CACHE_DIR=cache, RUST_LOG="error")
    started = time.perf_counter()
    done = subprocess.run(
        [f"{ROOT}/target/release/runner", "run", "--report", "json", spec], cwd=ROOT, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"runner failed:\n{done.stderr}")
    report = json.loads(done.stderr.strip().splitlines()[-1])
    report["wall"] = wall
    return report


def wasm(spec: str, cache: str) -> float:
    report = runner(spec, cache)
    step = next(s for s in report["steps"] if s["name"] == "score")
    return step["busy_seconds"] * 1e6 / step["rows_in"]


def native(model: str, data: str, engine: str, rows: int) -> float:
    done = sh(
        f"{ROOT}/plugins/target/release/examples/score", model, data, "--engine", engine, "--rows", str(rows),
        "--batch", str(BATCH), capture_output=True, text=True,
    )
    return json.loads(done.stdout)["us_per_row"]


def wasm_and_native(model: str, xgboost_model: str, data: str, cache: str, rounds: int = 5) -> dict[str, list[float]]:
    """`model` (ONNX), `xgboost_model` (the same model as XGBoost's JSON) and `data` are absolute
    paths. Microseconds per row of `rounds` processes each, taking turns, each the best of 3
    passes over the rows, by name:
    - "plugin calls": the plugin's calls in WASM, boundary included, with a deadline (the default);
    - "plugin, XGBoost JSON": the same calls with the model read from XGBoost's JSON instead of
      its ONNX export (the forest alone, no tract);
    - "plugin, no deadline": the same with `limits.call_seconds = 0`, so the compiled code has no
      deadline checks;
    - "same code, native": the native benchmark program (the plugin's per-batch work);
    - "same code, WASM" and "same code, WASM, no deadline": that program compiled to WASM;
    - "plugin, class ids": the plugin's calls returning class ids instead of named classes;
    - "boundary alone": the `hostile` fixture in its `none` mode, which returns the batch it gets,
      so a call is the columns copied in and out.
    Every process's figure is kept (see `print_runs`): on this machine memory-bound code runs at
    one of two speeds per process, native or not (README; runner/examples/mem_probe.rs), which a
    median alone hides."""
    release = f"{ROOT}/plugins/target/wasm32-wasip2/release"
    plugin, passthrough = f"{release}/onnx_predictor.wasm", f"{release}/hostile.wasm"
    score_plugin, wasi_command = f"{ROOT}/target/release/examples/score_plugin", f"{ROOT}/target/release/examples/wasi_command"
    program = f"{release}/examples/score.wasm"
    args = [model, data, "--batch", str(BATCH), "--repeat", "3"]
    dirs = ["--dir", os.path.dirname(os.path.abspath(model)), "--dir", os.path.dirname(os.path.abspath(data))]
    commands = {
        "plugin calls": [score_plugin, plugin, *args],
        "plugin, XGBoost JSON": [score_plugin, plugin, xgboost_model, *args[1:]],
        "plugin, no deadline": [score_plugin, plugin, *args, "--no-deadline"],
        "same code, native": [f"{ROOT}/plugins/target/release/examples/score", *args],
        "same code, WASM": [wasi_command, program, *dirs, "--", *args],
        "same code, WASM, no deadline": [wasi_command, program, "--no-deadline", *dirs, "--", *args],
        "plugin, class ids": [score_plugin, plugin, *args, "--class-ids"],
        "boundary alone": [score_plugin, passthrough, *args, "--config", '{"attack": "none"}'],
    }
    env = dict(os.environ, RUNNER_CACHE_DIR=cache)
    runs: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            done = sh(*command, env=env, capture_output=True, text=True)
            runs[name].append(json.loads(done.stdout)["us_per_row"])
    return runs


def print_ratios(runs: dict[str, list[float]], indent: str = ""):
    """WASM / native for the same code and for the plugin's calls, with and without deadline
    checks: between the medians, and between each one's fastest process (this machine's
    processes run at one of two speeds, which medians of five mix as they fall; the fastest of
    five is usually a fast one)."""
    for label, pick in [("medians", statistics.median), ("fastest processes", min)]:
        us = {name: pick(values) for name, values in runs.items()}
        native_us = us["same code, native"]
        print(f"{indent}WASM / native, {label}: same code {us['same code, WASM'] / native_us:.2f}x "
              f"({us['same code, WASM, no deadline'] / native_us:.2f}x without deadline checks); "
              f"the plugin's calls {us['plugin calls'] / native_us:.2f}x ({us['plugin, no deadline'] / native_us:.2f}x)")


def print_runs(runs: dict):
    """One line per measurement: each process's microseconds per row, in the order they ran."""
    print("per process (us/row, in turn):")
    for name, values in runs.items():
        print(f"  {name:<29} " + " ".join(f"{v:.3f}" for v in values))


def onnxruntime_us(model: str, data: str) -> float:
    import numpy as np
    import onnxruntime
    import pandas as pd

    x = pd.read_csv(data).to_numpy(dtype=np.float32)
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: x[:BATCH]})  # warm up
    started = time.perf_counter()
    for start in range(0, len(x), BATCH):
        session.run(None, {name: x[start : start + BATCH]})
    return (time.perf_counter() - started) * 1e6 / len(x)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--model", default="models/iris/model.onnx")
    p.add_argument("--xgboost-model", default="models/iris/model.json", help="the same model, as XGBoost's JSON")
    p.add_argument("--tract-rows", type=int, default=2000)
    a = p.parse_args()
    model = os.path.join(ROOT, a.model)

    build()
    work = tempfile.mkdtemp(prefix="bench-scoring-")
    try:
        data = os.path.join(work, "rows.csv")
        make_rows(a.rows, data)
        small = os.path.join(work, "small.csv")
        with open(data) as src, open(small, "w") as dst:
            for i, line in enumerate(src):
                if i > a.tract_rows:
                    break
                dst.write(line)
        cache = os.path.join(work, "cache")
        fast_spec, tract_spec = os.path.join(work, "fast.toml"), os.path.join(work, "tract.toml")
        write_spec(fast_spec, data, model, "fast")
        write_spec(tract_spec, small, model, "tract")

        cold = runner(fast_spec, cache)  # empty cache: Cranelift compiles the plugin
        warm = runner(fast_spec, cache)
        load_cold = next(s for s in cold["steps"] if s["name"] == "score")["plugin"]["load_seconds"]
        load_warm = next(s for s in warm["steps"] if s["name"] == "score")["plugin"]["load_seconds"]
        runs = wasm_and_native(model, os.path.join(ROOT, a.xgboost_model), data, cache)
        median = {name: statistics.median(values) for name, values in runs.items()}
        native_us = median["same code, native"]
        results = [
            ("plugin in WASM (our trees)", a.rows, median["plugin calls"]),
            ("  the same, from XGBoost JSON", a.rows, median["plugin, XGBoost JSON"]),
            ("  the same, no deadline", a.rows, median["plugin, no deadline"]),
            ("same code, native", a.rows, native_us),
            ("same code, WASM, no boundary", a.rows, median["same code, WASM"]),
            ("  the same, no deadline", a.rows, median["same code, WASM, no deadline"]),
            ("tract's own tree op, native", a.tract_rows, native(model, small, "tract", a.tract_rows)),
            ("tract's own tree op, in WASM", a.tract_rows, wasm(tract_spec, cache)),
            ("onnxruntime (Python)", a.rows, onnxruntime_us(model, data)),
        ]
        ort = results[-1][2]
        print(f"\nScoring {os.path.relpath(model, ROOT)}, batches of {BATCH} rows, {os.cpu_count()} cores")
        print(f"{'implementation':<32} {'rows':>8} {'us/row':>10} {'vs native':>10} {'vs onnxruntime':>15}")
        for name, rows, us in results:
            print(f"{name:<32} {rows:>8} {us:>10.3f} {us / native_us:>9.2f}x {us / ort:>14.2f}x")
        size = os.path.getsize(f"{ROOT}/plugins/target/wasm32-wasip2/release/onnx_predictor.wasm")
        print()
        print_ratios(runs)
        print(f"the plugin's calls with class ids instead of class names: {median['plugin, class ids']:.3f} us/row,"
              f" {median['plugin, class ids'] / native_us:.2f}x native (which does name them)")
        print(f"the boundary alone (a plugin returning the four feature columns it gets): "
              f"{median['boundary alone']:.3f} us/row, {median['boundary alone'] / native_us:.2f}x native's whole scoring")
        print_runs(runs)
        print(f"plugin: {size / 1e6:.1f} MB .wasm; load {load_cold:.2f} s cold (Cranelift), {load_warm * 1e3:.1f} ms warm (cache)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
