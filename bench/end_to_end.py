#!/usr/bin/env python3
"""End-to-end benchmark on one machine: the runner against the original flow and Redis itself.

On the same generated rows and the same bucket, every measured write into emptied servers:
  1. makes N Iris-like rows (bench/make_rows.py) and puts them, with the model, in bucket `batch`
     on a local S3-protocol server (s3s-fs);
  2. --runs times, taking turns: `runner run pipelines/iris.toml` (release build; S3 -> predictor
     -> row keys -> Redis), the same spec with the column types declared (no typing pass), a
     Redis mass insertion (`redis-cli --pipe`) of exactly the SETs the runner made, read back and
     replayed in the order the runner sends them (from a run with a CSV sink), and
     `redis-benchmark -P 64 -t set`. A thread polls DBSIZE to split each run into start-up (to
     the first write), writing, and the tail; CPU seconds of the runner and of redis-server are
     counted;
  3. with --cluster, the same into a three-node Redis Cluster (the mass insertion sends each
     node its own keys; `redis-benchmark --cluster`), then SETs sent by redis-rs's cluster
     client against the sink's routing (runner/examples/cluster_clients.rs);
  4. the runner without the score step and the original flow (seed_flow.py), each into an
     emptied server;
  5. unless --skip-scoring: scores the rows with the predictor in WASM and natively (calls
     alone), and with onnxruntime, and times `runner run pipelines/iris-local.toml` (150 rows)
     with an empty and a warm cache;
then prints the tables: rows/s and peak RSS of each, the runner against the mass insertion run
by run (with the phases), and the ratios.

Usage (from the repository root):
  python3 bench/end_to_end.py [--rows 1000000] [--runs 3] [--cluster] [--pin] [--skip-scoring]
                              [--seed-flow ../shared/reference/seed_flow.py] [--skip-seed-flow]
                              [--score-rows 1000000]

Needs: redis-server and redis-benchmark (apt-get install redis-server); s3s-fs (installed into
target/bench-tools on first use: cargo install s3s-fs --version 0.14.1 --features binary);
Python with pandas, xgboost, boto3, redis, onnxruntime (models/iris/requirements.txt + boto3 redis).
"""
import argparse
import binascii
import csv
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import redis

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


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True).stdout


# With --pin: the CPU every redis-server runs on (the last), the rest of the machine running
# everything else (this script sets its own affinity, which its children inherit).
REDIS_CPU = None


def start_redis(port: int, *extra: str) -> subprocess.Popen:
    pinned = ["taskset", "-c", str(REDIS_CPU)] if REDIS_CPU is not None else []
    server = subprocess.Popen(
        [*pinned, "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, "redis-server")
    return server


def start_cluster(work: str, servers: list) -> list:
    """Three empty cluster nodes on free ports (and free bus ports), joined; returns their ports."""
    ports = []
    while len(ports) < 3:
        port = free_port()
        if port + 10000 < 65536 and port not in ports:
            ports.append(port)
    for port in ports:
        node_dir = os.path.join(work, f"node-{port}")
        os.makedirs(node_dir)
        servers.append(start_redis(port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                   "--dir", node_dir))
    subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", "0",
                    "--cluster-yes"], capture_output=True, check=True)
    for _ in range(200):
        if all("cluster_state:ok" in redis_cli(p, "CLUSTER", "INFO") for p in ports):
            return ports
        time.sleep(0.05)
    sys.exit("the cluster did not become ready")


class Watch(threading.Thread):
    """Polls DBSIZE of `ports` while a run writes: when the first key arrived, when the last."""

    def __init__(self, ports):
        super().__init__(daemon=True)
        self.clients = [redis.Redis(port=p) for p in ports]
        self.stop, self.first, self.last, self.size = False, None, None, 0
        self.started = time.perf_counter()

    def run(self):
        while not self.stop:
            size = sum(c.dbsize() for c in self.clients)
            now = time.perf_counter() - self.started
            if size > self.size:
                self.first = self.first if self.first is not None else now
                self.last, self.size = now, size
            time.sleep(0.01)  # often enough to place the writes, seldom enough not to slow them


def flush(ports):
    for port in ports:
        redis_cli(port, "FLUSHALL")


def contents(ports):
    """Every (key, value) the nodes of `ports` hold."""
    pairs = []
    for port in ports:
        client = redis.Redis(port=port)
        keys = list(client.scan_iter(count=10_000))
        for i in range(0, len(keys), 10_000):
            chunk = keys[i:i + 10_000]
            pipe = client.pipeline(transaction=False)  # GETs, not MGET: a cluster node refuses
            for key in chunk:                          # keys of different slots in one command
                pipe.get(key)
            pairs.extend(zip(chunk, pipe.execute()))
    return pairs


def resp_sets(pairs) -> bytes:
    """`SET key value` for each pair in Redis's protocol, what `redis-cli --pipe` sends."""
    return b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v) for k, v in pairs)


def slot_owners(port: int) -> list:
    """The port owning each of the 16384 slots, from CLUSTER SLOTS."""
    owners = [None] * 16384
    for start, end, master, *_ in redis.Redis(port=port).execute_command("CLUSTER SLOTS"):
        for slot in range(start, end + 1):
            owners[slot] = master[1]
    return owners


def key_slot(key: bytes) -> int:
    """CRC16 (XMODEM, which is binascii.crc_hqx from 0) of the key or its hash tag, mod 16384."""
    open_at = key.find(b"{")
    if open_at >= 0:
        close_at = key.find(b"}", open_at + 1)
        if close_at > open_at + 1:
            key = key[open_at + 1:close_at]
    return binascii.crc_hqx(key, 0) % 16384


def mass_insertion(files: dict) -> float:
    """Replays each port's file with `redis-cli --pipe`, all at once; returns the wall seconds."""
    started = time.perf_counter()
    running = [(port, subprocess.Popen(["redis-cli", "-p", str(port), "--pipe"], stdin=open(path, "rb"),
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
               for port, path in files.items()]
    for port, process in running:
        out = process.communicate()[0]
        if process.returncode != 0 or "errors: 0," not in out:
            sys.exit(f"redis-cli --pipe into port {port} failed:\n{out}")
    return time.perf_counter() - started


def written_order(env, iris_spec: str, work: str) -> list:
    """The keys in the order the runner sends them (the input's), each once: the flagship
    pipeline (`iris_spec`, its plugin folder absolute) with a CSV file sink instead of Redis. The mass insertion replays in this order, as
    any client writing rows as they come would: SCAN's order is the server's hash-table order,
    which Redis inserts about 30% faster (its cache stays warm), so replaying what SCAN returns
    would flatter Redis."""
    spec, written = os.path.join(work, "ordered.toml"), os.path.join(work, "written.csv")
    with open(spec, "w") as f:
        f.write(iris_spec.split("[sink]")[0] + f'[sink]\nkind = "csv"\nconfig = {{ url = "{written}" }}\n')
    subprocess.run(["target/release/runner", "run", "-q", spec], cwd=ROOT, env=env, check=True)
    with open(written, newline="") as f:
        return list(dict.fromkeys(row["key"].encode() for row in csv.DictReader(f)))


def measured_runs(a, env, ports, url, work, label, order, declared=None):
    """Runs the runner, the mass insertion of the same SETs (in `order`) and redis-benchmark in
    turns, each into emptied servers, `--runs` times (and the runner on `declared`, a spec with
    the column types given, if any): taking turns, each ratio compares writes made within seconds
    of each other, whatever the machine's speed does meanwhile. Returns the per-run figures and
    the last run's step report."""
    runs, files, keys, report = [], None, None, None
    for i in range(a.runs):
        declared_seconds = None
        if declared:
            flush(ports)
            declared_seconds = peak_rss_mb(["target/release/runner", "run", declared], dict(env, REDIS_URL=url))[0]
        flush(ports)
        pids = [server_pid(port) for port in ports]
        before = [process_cpu(pid) for pid in pids]
        watch = Watch(ports)
        watch.start()
        seconds, rss, err = peak_rss_mb(["target/release/runner", "run", "--report", "json", "pipelines/iris.toml"],
                                        dict(env, REDIS_URL=url))
        watch.stop = True
        watch.join()
        report = json.loads(err.strip().splitlines()[-2])  # the JSON line, before GNU time's
        redis_cpu = sum(process_cpu(pid) for pid in pids) - sum(before)
        if files is None:
            values = dict(contents(ports))
            if set(values) != set(order):
                sys.exit(f"{label}: Redis holds {len(values):,} keys, the runner's CSV output {len(order):,}")
            keys = len(values)
            owners = slot_owners(ports[0]) if len(ports) > 1 else None
            files, scan_files = {}, {}
            for name, ordered, into in (("runner", order, files), ("scan", list(values), scan_files)):
                by_port = {port: [] for port in ports}
                for key in ordered:
                    by_port[owners[key_slot(key)] if owners else ports[0]].append((key, values[key]))
                for port, port_pairs in by_port.items():
                    into[port] = os.path.join(work, f"sets-{label}-{name}-{port}.resp")
                    with open(into[port], "wb") as f:
                        f.write(resp_sets(port_pairs))
        flush(ports)
        before = [process_cpu(pid) for pid in pids]
        pipe_seconds = mass_insertion(files)
        pipe_redis_cpu = sum(process_cpu(pid) for pid in pids) - sum(before)
        flush(ports)
        scan_seconds = mass_insertion(scan_files)
        benchmark = redis_benchmark(a, ports, cluster=len(ports) > 1)
        first = watch.first or 0.0
        last = watch.last or seconds
        runs.append(dict(seconds=seconds, rss=rss, runner_cpu=cpu_of(err), redis_cpu=redis_cpu, first=first,
                         writing=last - first, tail=max(0.0, seconds - last), pipe=pipe_seconds, pipe_redis_cpu=pipe_redis_cpu,
                         scan=scan_seconds, keys=keys, declared=declared_seconds, benchmark=benchmark))
        print(f"  {label} run {i + 1}: runner {a.rows / seconds:,.0f} rows/s, mass insertion {keys / pipe_seconds:,.0f}"
              f" SETs/s, ratio {(a.rows / seconds) / (keys / pipe_seconds):.2f}; redis-benchmark"
              f" {benchmark['rate']:,.0f} SETs/s, ratio {(a.rows / seconds) / benchmark['rate']:.2f}", flush=True)
    return runs, report


def s3_client(endpoint: str):
    import boto3
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
                        region_name="us-east-1")


def put_object(endpoint: str, key: str, path: str):
    """Uploads a file into bucket `batch` in one PutObject."""
    with open(path, "rb") as f:
        s3_client(endpoint).put_object(Bucket="batch", Key=key, Body=f.read())


def serve_time(endpoint: str) -> float:
    """Seconds the S3 server takes to answer a HEAD and a GET of the data object (median of 3)."""
    s3 = s3_client(endpoint)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        s3.head_object(Bucket="batch", Key="data/iris.csv")
        s3.get_object(Bucket="batch", Key="data/iris.csv")["Body"].read()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def server_pid(port: int) -> int:
    return int(re.findall(r"process_id:(\d+)", redis_cli(port, "INFO", "server"))[0])


def redis_benchmark(a, ports: list, cluster: bool) -> dict:
    """`redis-benchmark -P 64 -t set` into the emptied servers of `ports`: its SETs/s, the Redis
    CPU seconds they cost, and how many keys they left (random keys drawn with replacement, so
    about 63% of the SETs make a new key; the others overwrite one)."""
    flush(ports)
    pids = [server_pid(port) for port in ports]
    before = sum(process_cpu(pid) for pid in pids)
    args = ["redis-benchmark", "-p", str(ports[0]), "-P", "64", "-t", "set", "-n", str(a.rows), "-r", str(a.rows), "-q"]
    done = subprocess.run(args + (["--cluster"] if cluster else []), capture_output=True, text=True, check=True)
    cpu = sum(process_cpu(pid) for pid in pids) - before
    keys = sum(int(redis_cli(port, "DBSIZE")) for port in ports)
    return dict(rate=float(re.findall(r"SET: ([\d.]+) requests per second", done.stdout)[-1]), cpu=cpu, keys=keys)


def cpu_floor(runner_cpu: float, redis_cpu: float) -> float:
    """The shortest a run could take on this machine with every core busy (see CPU_FLOOR)."""
    if REDIS_CPU is not None:
        other_cores = REDIS_CPU  # the cores before the last
        return max(runner_cpu / other_cores, redis_cpu)
    return (runner_cpu + redis_cpu) / os.cpu_count()


CPU_FLOOR = ("(CPU runner + CPU redis) / cores, CPU redis being the less of the runner's writes' and the mass"
             " insertion's (with --pin: the longer of CPU redis on its core and CPU runner on the others)")


def print_runs_table(a, label, runs, benchmark_name):
    keys = runs[0]["keys"]
    print(f"\n{label}: the runner against Redis mass insertion (redis-cli --pipe) of the same {keys:,} SETs"
          f" in the runner's order, each into emptied servers ({a.rows - keys:,} rows share a key with another)")
    print(f"{'run':<4} {'runner rows/s':>14} {'--pipe SETs/s':>14} {'ratio':>6} {'to 1st write':>13} {'writing':>8}"
          f" {'writing rows/s':>15} {'after':>7} {'CPU runner':>11} {'CPU redis':>10} {'--pipe':>7} {'RSS':>7}")
    for i, r in enumerate(runs):
        rate, pipe = a.rows / r["seconds"], keys / r["pipe"]
        print(f"{i + 1:<4} {rate:>14,.0f} {pipe:>14,.0f} {rate / pipe:>6.2f} {r['first'] * 1e3:>10.0f} ms"
              f" {r['writing']:>6.2f} s {a.rows / max(r['writing'], 1e-9):>15,.0f} {r['tail'] * 1e3:>4.0f} ms"
              f" {r['runner_cpu']:>9.2f} s {r['redis_cpu']:>8.2f} s {r['pipe_redis_cpu']:>5.2f} s {r['rss']:>4.0f} MB")
    if runs[0]["declared"]:
        print(f"  with every column's type declared (no typing pass): runner "
              + ", ".join(f"{a.rows / r['declared']:,.0f}" for r in runs) + " rows/s, ratio "
              + ", ".join(f"{(a.rows / r['declared']) / (keys / r['pipe']):.2f}" for r in runs))
    print("  the same SETs in SCAN's order (the server's hash-table order, which Redis inserts faster): "
          + ", ".join(f"{keys / r['scan']:,.0f}" for r in runs) + " SETs/s; runner's order / SCAN's: "
          + ", ".join(f"{r['scan'] / r['pipe']:.2f}" for r in runs))
    ratios = [(a.rows / r["seconds"]) / (keys / r["pipe"]) for r in runs]
    runner = statistics.median(a.rows / r["seconds"] for r in runs)
    print(f"  ratio runner / mass insertion: {min(ratios):.2f}-{max(ratios):.2f}")
    print(f"\n  {benchmark_name} in the same turns ({a.rows:,} SETs of short random keys, each run into emptied servers)")
    print(f"  {'run':<4} {'SETs/s':>10} {'new keys':>10} {'CPU redis':>10} {'runner / it':>12} {'CPU floor':>10} {'at most':>8}")
    for i, r in enumerate(runs):
        b = r["benchmark"]
        # Every core busy for the whole run is the best the machine can do: the runner's CPU
        # plus the least Redis was seen to spend on the same writes.
        floor = cpu_floor(r["runner_cpu"], min(r["redis_cpu"], r["pipe_redis_cpu"]))
        print(f"  {i + 1:<4} {b['rate']:>10,.0f} {b['keys']:>10,} {b['cpu']:>8.2f} s {a.rows / r['seconds'] / b['rate']:>12.2f}"
              f" {floor:>8.2f} s {a.rows / floor / b['rate']:>8.2f}")
    print(f"  (against {keys:,} new keys and {statistics.median(r['pipe_redis_cpu'] for r in runs):.2f} CPU-s of"
          f" redis-server for the mass insertion of the runner's SETs; CPU floor: {CPU_FLOOR}, the shortest the run"
          f" could take with every core busy; at most: the runner's rate at that floor / {benchmark_name})")
    print("  (CPU redis: redis-server's CPU seconds for the runner's writes, --pipe: for the mass insertion's)")
    print("  (to 1st write: start-up, S3 read and scoring before the first key lands; writing: first key to last;"
          " after: the last key to exit)")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3, help="runs of the runner and of the mass insertion, taking turns")
    p.add_argument("--cluster", action="store_true", help="also into a three-node Redis Cluster")
    p.add_argument("--seed-flow", default=os.path.join(ROOT, "..", "shared", "reference", "seed_flow.py"))
    p.add_argument("--skip-seed-flow", action="store_true", help="do not run the original flow")
    p.add_argument("--skip-scoring", action="store_true", help="do not measure scoring alone and start-up")
    p.add_argument("--score-rows", type=int, default=1_000_000, help="rows for the scoring-alone measurements")
    p.add_argument("--pin", action="store_true",
                   help="redis-server (every node) on the last core, everything else (runner, redis-cli, redis-benchmark,"
                        " the S3 server) on the others, as when Redis has a machine of its own")
    a = p.parse_args()
    if a.pin:
        global REDIS_CPU
        if os.cpu_count() < 2:
            sys.exit("--pin needs at least 2 cores")
        REDIS_CPU = os.cpu_count() - 1
        os.sched_setaffinity(0, set(range(REDIS_CPU)))

    build()
    s3s = s3s_fs()
    work = tempfile.mkdtemp(prefix="bench-e2e-")
    servers = []
    try:
        # Services on free loopback ports, stopped by pid at the end.
        redis_port, s3_port = free_port(), free_port()
        servers.append(start_redis(redis_port))
        root = os.path.join(work, "s3")
        os.makedirs(os.path.join(root, "batch"))
        servers.append(subprocess.Popen(
            [s3s, "--host", "127.0.0.1", "--port", str(s3_port), "--access-key", ACCESS, "--secret-key", SECRET, root],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(s3_port, "s3s-fs")
        endpoint, redis_url = f"http://127.0.0.1:{s3_port}", f"redis://127.0.0.1:{redis_port}"

        data = os.path.join(work, "iris.csv")
        with open(data, "w") as out:
            subprocess.run([sys.executable, "bench/make_rows.py", "models/iris/iris.csv", str(a.rows), "--seed", "0"], cwd=ROOT, stdout=out, check=True)
        # Uploaded, not copied into the server's folder: s3s-fs then keeps each object's ETag, as
        # MinIO does, instead of computing the MD5 of the whole object for every request (which
        # added about 100 ms to each run's start-up).
        put_object(endpoint, "data/iris.csv", data)
        for name in ("model.onnx", "model.json"):
            put_object(endpoint, f"artifact/{name}", os.path.join(ROOT, "models", "iris", name))
        print(f"{a.rows} rows, {os.path.getsize(data) / 1e6:.1f} MB of CSV in s3://batch/data/iris.csv", flush=True)

        env = dict(os.environ, S3_ENDPOINT=endpoint, AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET,
                   REDIS_URL=f"{redis_url}/0", RUST_LOG="error", RUNNER_CACHE_DIR=os.path.join(work, "cache"))
        # Compile the plugin into the cache first: the timed run measures the pipeline, not Cranelift.
        peak_rss_mb(["target/release/runner", "validate", "pipelines/iris.toml"], env)
        declared = os.path.join(work, "declared.toml")
        # The flagship spec, its plugin folder made absolute, for variants written elsewhere.
        with open(os.path.join(ROOT, "pipelines", "iris.toml")) as f:
            text = f.read().replace('plugin_dir = "../plugins', f'plugin_dir = "{ROOT}/plugins')
        with open(declared, "w") as f:
            f.write(text.replace(
                '/data/iris.csv" }', '/data/iris.csv", columns = { sepal_length = "f64", sepal_width = "f64",'
                ' petal_length = "f64", petal_width = "f64" } }'))
        order = written_order(env, text, work)
        runs, report = measured_runs(a, env, [redis_port], f"{redis_url}/0", work, "one node", order, declared)
        s3_serves = serve_time(endpoint)
        cluster_runs = None
        if a.cluster:
            ports = start_cluster(work, servers)
            cluster_url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
            cluster_runs, _ = measured_runs(a, env, ports, cluster_url, work, "cluster", order)
            # How the sink's routing compares with redis-rs's own cluster client (see the example).
            subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "runner", "--example", "cluster_clients"],
                           cwd=ROOT, check=True)
            clients = subprocess.run([os.path.join(ROOT, "target", "release", "examples", "cluster_clients"),
                                      str(a.rows), str(a.runs)] + [f"127.0.0.1:{p}" for p in ports],
                                     capture_output=True, text=True, check=True).stdout

        # Every other measurement also writes into an emptied server.
        results = {"runner": (a.rows / statistics.median(r["seconds"] for r in runs),
                              statistics.median(r["rss"] for r in runs), statistics.median(r["seconds"] for r in runs))}
        flush([redis_port])
        unscored = os.path.join(work, "unscored.toml")
        with open(unscored, "w") as f:
            f.write(UNSCORED.format())
        seconds, rss, _ = peak_rss_mb(["target/release/runner", "run", unscored], env)
        results["runner without the score step"] = (a.rows / seconds, rss, seconds)

        if not a.skip_seed_flow:
            flush([redis_port])
            seed_env = dict(env, AWS_EC2_METADATA_DISABLED="true")
            seconds, rss, _ = peak_rss_mb([sys.executable, a.seed_flow, "--endpoint", endpoint, "--bucket", "batch",
                                           "--redis", f"{redis_url}/0"], seed_env)
            results["original flow (seed_flow.py)"] = (a.rows / seconds, rss, seconds)

        rate = statistics.median(r["benchmark"]["rate"] for r in runs)
        results["redis-benchmark -P 64 -t set"] = (rate, None, a.rows / rate)
        keys = runs[0]["keys"]
        pipe_rate = statistics.median(keys / r["pipe"] for r in runs)
        results["redis-cli --pipe, the same SETs"] = (pipe_rate, None, keys / pipe_rate)

        runner_rate = results["runner"][0]
        pinning = f"; redis-server on core {REDIS_CPU}, the rest on the others" if a.pin else ""
        print(f"\nEnd to end, {a.rows} rows (S3 -> score -> key -> Redis), {os.cpu_count()} cores{pinning};"
              f" medians of {a.runs} runs")
        print(f"{'what':<34} {'rows/s':>10} {'seconds':>9} {'peak RSS':>10}")
        for name, (rate_, rss, seconds) in results.items():
            shown = f"{rss:.0f} MB" if rss is not None else "-"
            print(f"{name:<34} {rate_:>10.0f} {seconds:>9.2f} {shown:>10}")
        print("\nratios")
        if "original flow (seed_flow.py)" in results:
            print(f"  runner / original flow:      {runner_rate / results['original flow (seed_flow.py)'][0]:.1f}x")
        print(f"  runner / redis-benchmark:    {runner_rate / rate:.2f}")
        print_runs_table(a, "One node", runs, "redis-benchmark -P 64")
        print(f"  the S3 server (s3s-fs) serves the object in {s3_serves * 1e3:.0f} ms (HEAD + GET, median of 3);"
              " the runner reads all of it to type the columns as pandas does before the first row goes out")
        if cluster_runs:
            print_runs_table(a, "Three-node cluster", cluster_runs, "redis-benchmark --cluster -P 64")
            one, three = statistics.median(a.rows / r["seconds"] for r in runs), statistics.median(a.rows / r["seconds"] for r in cluster_runs)
            print(f"  runner into the cluster / into one node: {three / one:.2f}")
            print("\nThe same kind of SETs into the cluster by client (runner/examples/cluster_clients.rs)")
            print("  " + clients.strip().replace("\n", "\n  "))

        print("\nrunner steps, last run into one node (busy time, summed over workers)")
        for s in report["steps"]:
            print(f"  {s['name']:<8} {s['implementation']:<28} x{s['workers']}  {s['busy_seconds']:.2f} s")

        if a.skip_scoring:
            return
        # The first --score-rows rows: per-row scoring costs do not need ten million.
        csv_copy = os.path.join(work, "rows.csv")
        with open(data) as src, open(csv_copy, "w") as dst:
            for i, line in enumerate(src):
                if i > a.score_rows:
                    break
                dst.write(line)
        # Scoring alone, WASM and native under the same conditions (see bench/scoring.py).
        runs_ = wasm_and_native(os.path.join(ROOT, "models/iris/model.onnx"), os.path.join(ROOT, "models/iris/model.json"),
                               csv_copy, env["RUNNER_CACHE_DIR"])
        median = {name: statistics.median(values) for name, values in runs_.items()}
        wasm_us, native_us, program_us = median["plugin calls"], median["same code, native"], median["same code, WASM"]
        ort = subprocess.run([sys.executable, "-c", ORT, csv_copy], cwd=ROOT, capture_output=True, text=True, check=True)
        ort_us = float(ort.stdout)
        print(f"\n  scoring, WASM / onnxruntime: {wasm_us / ort_us:.2f}  (onnxruntime {ort_us:.2f} us/row)")
        print(f"  scoring, us/row (medians): the plugin's calls {wasm_us:.3f}, same code native {native_us:.3f},"
              f" in WASM {program_us:.3f}; class ids {median['plugin, class ids']:.3f};"
              f" the boundary alone {median['boundary alone']:.3f}")
        print_ratios(runs_, indent="  ")
        print_runs(runs_)

        cold_cache = os.path.join(work, "cold")
        local_env = dict(os.environ, RUNNER_CACHE_DIR=cold_cache, RUST_LOG="error")
        cold, _, _ = peak_rss_mb(["target/release/runner", "run", "-q", "pipelines/iris-local.toml"], local_env)
        warm = min(peak_rss_mb(["target/release/runner", "run", "-q", "pipelines/iris-local.toml"], local_env)[0] for _ in range(5))
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
