#!/usr/bin/env python3
"""Writes the Parquet files of runner/tests/parquet.rs with pyarrow, into the directory given.

  iris.parquet          models/iris/iris.csv, float64, row groups of 40 rows, snappy
  iris-zstd.parquet     the same, zstd, one row group
  <case>.parquet        a `label` column (setosa, versicolor, virginica) and the columns of the
                        case, row groups of 7 rows, nulls in every nullable type:
    ints                int64 with nulls (pandas: float64) and int32: a float row
    ints_nonull         int64, uint8, int16, no nulls: an int row
    floats              float64 with nulls and NaN, float32: a float row
    bools               bool with nulls (pandas: object of None) and bool: a bool row
    strings             utf8 and large_utf8 with nulls, among ints: an object row
    dictionary          dictionary-encoded strings with nulls (pandas: category), floats
    mixed               all of the above at once, zstd
  prefix/part-{0,1,2}.parquet   the `mixed` columns over three objects; nulls in the int64
                        column only in part 2, so only the whole input types it float64
  big.parquet           4,000 rows of `mixed`'s columns in 40 row groups
  wide.parquet          ten float64 columns c0..c9, 4 row groups of 50,000 rows, uncompressed:
                        each column chunk (400 KB) is apart from the next-but-one by more
                        than the reader's 1 MiB coalescing gap
  bad/truncated.parquet iris.parquet cut short
  bad/not-parquet.parquet  a CSV file
  bad/corrupt.parquet   iris.parquet with row group 1's first page header overwritten
  bad-prefix/{a,b}.parquet two objects whose schemas differ

Rows are made from a fixed seed: every run writes the same files.
"""
import os
import random
import zlib
import sys

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

LABELS = ["setosa", "versicolor", "virginica"]
WORDS = ["a", "b c", "é", "x,y", "", "None", "nan", "long text " * 3]


def maybe(rng, value, p=0.15):
    return None if rng.random() < p else value


def columns(rng, n, case, part=None):
    cols = {"label": pa.array([rng.choice(LABELS) for _ in range(n)])}
    if case in ("ints", "mixed"):
        # In a prefix, only the last part has nulls in it.
        p = 0.15 if part in (None, 2) else 0.0
        cols["n"] = pa.array([maybe(rng, rng.randint(-50, 50), p) for _ in range(n)], pa.int64())
        cols["i32"] = pa.array([rng.randint(-(2**31), 2**31 - 1) for _ in range(n)], pa.int32())
    if case == "ints_nonull":
        cols["a"] = pa.array([rng.randint(-(2**40), 2**40) for _ in range(n)], pa.int64())
        cols["u8"] = pa.array([rng.randint(0, 255) for _ in range(n)], pa.uint8())
        cols["i16"] = pa.array([rng.randint(-300, 300) for _ in range(n)], pa.int16())
    if case in ("floats", "mixed"):
        special = [0.1, 1e-05, 1e16, 123456789.125, -0.0, float("nan"), 5.0, 2.5e-300]
        cols["f"] = pa.array([maybe(rng, rng.choice(special + [rng.uniform(-9, 9)])) for _ in range(n)], pa.float64())
        cols["f32"] = pa.array([rng.choice([5.1, 0.1, 3.0, 1e-7, rng.uniform(-5, 5)]) for _ in range(n)], pa.float32())
    if case in ("bools", "mixed"):
        cols["b"] = pa.array([maybe(rng, rng.random() < 0.5) for _ in range(n)], pa.bool_())
        cols["bb"] = pa.array([rng.random() < 0.5 for _ in range(n)], pa.bool_())
    if case in ("strings", "mixed"):
        cols["s"] = pa.array([maybe(rng, rng.choice(WORDS)) for _ in range(n)], pa.string())
        cols["ls"] = pa.array([maybe(rng, rng.choice(WORDS)) for _ in range(n)], pa.large_string())
        if case == "strings":
            cols["k"] = pa.array([rng.randint(0, 9) for _ in range(n)], pa.int64())
    if case in ("dictionary", "mixed"):
        cols["d"] = pa.array([maybe(rng, rng.choice(["red", "green", "blue"])) for _ in range(n)]).dictionary_encode()
        if case == "dictionary":
            cols["x"] = pa.array([rng.uniform(0, 1) for _ in range(n)], pa.float64())
    # The label plays a model's prediction: a function of the row's other values, so rows that
    # share a key share a label (a Redis sink that writes batches as they come keeps either).
    rows = zip(*(cols[name].to_pylist() for name in cols if name != "label"))
    cols["label"] = pa.array([LABELS[zlib.crc32(repr(row).encode()) % 3] for row in rows])
    return pa.table(cols)


def main(out):
    os.makedirs(out, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    iris = pacsv.read_csv(os.path.join(here, "../../../models/iris/iris.csv"))
    pq.write_table(iris, os.path.join(out, "iris.parquet"), row_group_size=40)  # as models/iris/iris.parquet
    pq.write_table(iris, os.path.join(out, "iris-zstd.parquet"), compression="zstd")

    rng = random.Random(26)
    for case in ["ints", "ints_nonull", "floats", "bools", "strings", "dictionary", "mixed"]:
        compression = "zstd" if case == "mixed" else "snappy"
        table = columns(rng, 60, case)
        pq.write_table(table, os.path.join(out, f"{case}.parquet"), row_group_size=7, compression=compression)

    os.makedirs(os.path.join(out, "prefix"), exist_ok=True)
    for part in range(3):
        table = columns(rng, 30 + 10 * part, "mixed", part)
        pq.write_table(table, os.path.join(out, "prefix", f"part-{part}.parquet"), row_group_size=11)
    # pyarrow leaves such files out of a directory, and so does the runner.
    open(os.path.join(out, "prefix", "_SUCCESS"), "w").close()

    pq.write_table(columns(rng, 4000, "mixed"), os.path.join(out, "big.parquet"), row_group_size=100)

    wide = pa.table({f"c{i}": [rng.random() for _ in range(200_000)] for i in range(10)})
    pq.write_table(wide, os.path.join(out, "wide.parquet"), row_group_size=50_000, compression="none", use_dictionary=False)

    os.makedirs(os.path.join(out, "bad"), exist_ok=True)
    whole = open(os.path.join(out, "iris.parquet"), "rb").read()
    open(os.path.join(out, "bad", "truncated.parquet"), "wb").write(whole[: len(whole) - 100])
    open(os.path.join(out, "bad", "not-parquet.parquet"), "w").write("a,b\n1,2\n")
    # Row group 1's first page header overwritten: the footer is whole, row group 0 reads.
    at = pq.ParquetFile(os.path.join(out, "iris.parquet")).metadata.row_group(1).column(0).data_page_offset
    corrupt = bytearray(whole)
    corrupt[at : at + 16] = b"\xff" * 16
    open(os.path.join(out, "bad", "corrupt.parquet"), "wb").write(bytes(corrupt))
    os.makedirs(os.path.join(out, "bad-prefix"), exist_ok=True)
    pq.write_table(columns(rng, 10, "ints"), os.path.join(out, "bad-prefix", "a.parquet"))
    pq.write_table(columns(rng, 10, "floats"), os.path.join(out, "bad-prefix", "b.parquet"))


if __name__ == "__main__":
    main(sys.argv[1])
