#!/usr/bin/env python3
"""The original flow's keys over a Parquet input, read as the flow would with pd.read_parquet.

  parquet_flow.py PATH REDIS_URL

PATH is a file or a directory of them. The `label` column plays the model: it is taken out of
the frame, and the flow's own `batch_processing` (bench/reference/seed_flow.py) keys every other
column of each row and pairs the key with the row's label; `ingest_redis` then SETs them.
"""
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../bench/reference"))
import seed_flow  # noqa: E402

CLASSES = {name: number for number, name in seed_flow.LABELS.items()}


class LabelColumn:
    """A "model" that predicts the label the row already has."""

    def __init__(self, labels):
        self.labels = [CLASSES[label] for label in labels]

    def predict(self, data):
        assert len(data) == len(self.labels)
        return self.labels


def main(path, redis_url):
    data = pd.read_parquet(path)
    labels = data.pop("label")
    predictions = seed_flow.batch_processing(LabelColumn(labels), data)
    seed_flow.ingest_redis(redis_url, predictions)
    print(f"rows={len(data)} keys={len(predictions)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
