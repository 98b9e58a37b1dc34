#!/usr/bin/env python3
"""Runs the original flow (seed_flow.py) and `runner run pipelines/iris.toml` against the same
bucket and the same Redis server, each into its own database, and compares what they wrote.

Usage (servers already running, bucket `batch` filled as docker-compose.yml fills it):
  AWS_ACCESS_KEY_ID=minio AWS_SECRET_ACCESS_KEY=minio123 \\
  python3 bench/compare_with_seed_flow.py --endpoint http://127.0.0.1:9000 --redis redis://127.0.0.1:6379 \\
      [--data FILE] [--seed-flow bench/reference/seed_flow.py] [--runner target/debug/runner]

--data FILE uploads FILE as data/iris.csv into the bucket first (a file of integers, of mixed
integer and float columns, with missing values...), so both read it.

Needs: Python with pandas, xgboost, redis, boto3 (what seed_flow.py imports).
Exit status 0 when both left exactly the same keys with the same values.
"""
import argparse
import os
import subprocess
import sys

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def contents(url: str) -> dict:
    client = redis.Redis.from_url(url, decode_responses=True)
    return {key: client.get(key) for key in client.scan_iter(count=10_000)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", default="http://127.0.0.1:9000")
    p.add_argument("--bucket", default="batch")
    p.add_argument("--redis", default="redis://127.0.0.1:6379", help="server URL, without a database")
    p.add_argument("--seed-flow", default=os.path.join(ROOT, "bench", "reference", "seed_flow.py"))
    p.add_argument("--data", help="a CSV file to upload as data/iris.csv first")
    p.add_argument("--runner", default=os.path.join(ROOT, "target", "debug", "runner"))
    p.add_argument("--spec", default=os.path.join(ROOT, "pipelines", "iris.toml"))
    a = p.parse_args()

    if a.data:
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=a.endpoint,
            aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "minio"),
            aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "minio123"),
            region_name=os.environ.get("AWS_REGION", "us-east-1"),
        )
        s3.upload_file(a.data, a.bucket, "data/iris.csv")
        print(f"uploaded {a.data} as s3://{a.bucket}/data/iris.csv")

    seed_db, runner_db = f"{a.redis}/1", f"{a.redis}/2"
    for url in (seed_db, runner_db):
        redis.Redis.from_url(url).flushdb()

    print("original flow:")
    subprocess.run(
        [sys.executable, a.seed_flow, "--endpoint", a.endpoint, "--bucket", a.bucket, "--redis", seed_db], check=True
    )
    print("runner:")
    env = dict(os.environ, S3_ENDPOINT=a.endpoint, S3_BUCKET=a.bucket, REDIS_URL=runner_db)
    subprocess.run([a.runner, "run", a.spec], check=True, env=env)

    seed, ours = contents(seed_db), contents(runner_db)
    only_seed = sorted(set(seed) - set(ours))
    only_ours = sorted(set(ours) - set(seed))
    differ = sorted(k for k in set(seed) & set(ours) if seed[k] != ours[k])
    print(f"\noriginal flow: {len(seed)} keys; runner: {len(ours)} keys")
    print(f"only in the original: {len(only_seed)}; only in the runner's: {len(only_ours)}; different values: {len(differ)}")
    for key in (only_seed + only_ours + differ)[:10]:
        print(f"  {key}: original={seed.get(key)!r} runner={ours.get(key)!r}")
    identical = not (only_seed or only_ours or differ)
    print("IDENTICAL" if identical else "DIFFERENT")
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    main()
