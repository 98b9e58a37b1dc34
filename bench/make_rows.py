#!/usr/bin/env python3
# Copied from the project brief (shared/reference/make_rows.py) so benchmarks run from a clone.
"""Grow a small feature CSV into a large, realistic one, deterministically.

Each output row is a random input row with every value jittered by N(0, 0.05), rounded to two
decimals and kept at 0.1 or more, so rows stay plausible and nearly all keys are distinct.
Standard library only.

Usage: make_rows.py INPUT.csv ROWS [--seed 0] > OUTPUT.csv
"""
import argparse
import csv
import random
import sys


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input")
    p.add_argument("rows", type=int)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    with open(a.input, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        base = [[float(v) for v in row] for row in reader if row]

    rng = random.Random(a.seed)
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(header)
    for _ in range(a.rows):
        row = rng.choice(base)
        out.writerow([max(0.1, round(v + rng.gauss(0.0, 0.05), 2)) for v in row])


if __name__ == "__main__":
    main()
