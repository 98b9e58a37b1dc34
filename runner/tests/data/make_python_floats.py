#!/usr/bin/env python3
"""Writes python_floats.txt: `<IEEE-754 bits as 16 hex digits> <Python's str(float)>` per line.

The runner's row keys must format floats exactly as Python does; runner/tests/row_key.rs checks
its formatter against every line. The values are tricky on purpose: both sides of the switch to
exponent notation (1e-4/1e-5, 1e16), integral values, shortest-round-trip edge cases, subnormals,
extremes, and many random values of every magnitude, plus Iris-like two-decimal values.

Re-make: python3 make_python_floats.py  (deterministic)
"""
import math
import random
import struct
import sys

rng = random.Random(0)
values = [0.0, -0.0, 1.0, -1.0, 0.1, 0.2, 0.1 + 0.2, 1 / 3, 2 / 3, 5e-324, 2.2250738585072014e-308,
          sys.float_info.max, -sys.float_info.max, math.pi, math.e, 123456789.0, 1e22, 1e23, 9007199254740993.0]
for exponent in range(-323, 308):
    for mantissa in ("1", "1.5", "9.999999999999999", "2.5", "7"):
        values.append(float(f"{mantissa}e{exponent}"))
for boundary in (1e-4, 1e-5, 1e15, 1e16, 1e17):
    x = boundary
    for _ in range(4):
        values += [x, -x]
        x = math.nextafter(x, math.inf)
    x = boundary
    for _ in range(4):
        x = math.nextafter(x, 0.0)
        values += [x, -x]
for _ in range(3000):
    v = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
    if not math.isnan(v):
        values.append(v)
for _ in range(1000):
    values.append(rng.uniform(-1e6, 1e6) * 10.0 ** rng.randint(-20, 20))  # within range
for _ in range(1000):
    values.append(round(rng.uniform(0.1, 8.0), 2))
values += [float("inf"), float("-inf"), float("nan")]

with open("python_floats.txt", "w") as out:
    for v in values:
        (bits,) = struct.unpack("<Q", struct.pack("<d", v))
        out.write(f"{bits:016x} {v}\n")
