#!/usr/bin/env python3
"""Writes iris.parquet, the Parquet copy of iris.csv that pipelines/iris-parquet.toml reads:
the same rows and column names, float64 columns, row groups of 40 rows, snappy (pyarrow's
default). runner/tests/parquet.rs checks that the file holds exactly iris.csv's rows.

  .venv/bin/python models/iris/iris_parquet.py
"""
import os

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

here = os.path.dirname(os.path.abspath(__file__))
table = pacsv.read_csv(os.path.join(here, "iris.csv"))
pq.write_table(table, os.path.join(here, "iris.parquet"), row_group_size=40)
