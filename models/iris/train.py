#!/usr/bin/env python3
"""Train the Iris models the pipelines score, and write every artifact the tests use.

Writes, next to this script (deterministic: fixed seeds, single thread):
  iris.csv               the 150 rows to score: the four feature columns only, as the original
                         flow's data/iris.csv
  model.json             XGBoost classifier in XGBoost's native JSON (what the original flow loaded)
  model.onnx             the same model exported to ONNX with onnxmltools (one TreeEnsembleClassifier)
  expected.csv           per row: XGBoost's own label, class name and class probabilities
  logreg.onnx            a second model, scikit-learn logistic regression via skl2onnx (no ZipMap)
  expected-logreg.csv    per row: scikit-learn's label, class name and probabilities
  expected-keys.csv      per row: the original flow's Redis key (sha256 of the row as text) and
                         value (XGBoost's class name): what `pipelines/iris.toml` must write

Retrain:  pip install -r requirements.txt && python3 train.py
"""
import hashlib
import os

import numpy as np
import onnx
import onnxruntime
import pandas as pd
import xgboost
from onnxmltools import convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType as SklFloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

HERE = os.path.dirname(os.path.abspath(__file__))
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]


def out(name: str) -> str:
    return os.path.join(HERE, name)


def write_expected(path: str, labels, probabilities) -> None:
    rows = pd.DataFrame({"label": labels.astype(int), "class": [CLASSES[i] for i in labels]})
    for c, name in enumerate(CLASSES):
        # repr of a float32 widened to float64: exact, so tests can compare within tolerance.
        rows[f"p_{name}"] = probabilities[:, c].astype(np.float64)
    rows.to_csv(path, index=False, float_format="%.9g")


def check_onnx(path: str, x: np.ndarray, labels, probabilities) -> None:
    """The ONNX export must agree with the model it came from, on every row."""
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got_labels, got_probabilities = session.run(None, {session.get_inputs()[0].name: x})
    assert (got_labels == labels).all(), f"{path}: labels differ from the source model"
    worst = float(np.abs(got_probabilities - probabilities).max())
    assert worst < 1e-5, f"{path}: probabilities differ by {worst}"
    print(f"{path}: onnxruntime agrees (max probability difference {worst:.2e})")


def main() -> None:
    iris = load_iris()
    features = pd.DataFrame(iris.data, columns=COLUMNS)
    features.to_csv(out("iris.csv"), index=False)
    # Score what the pipeline will read: the CSV's values, parsed as the runner parses them.
    x64 = pd.read_csv(out("iris.csv")).to_numpy(dtype=np.float64)
    x = x64.astype(np.float32)
    y = iris.target

    model = xgboost.XGBClassifier(n_estimators=100, random_state=0, n_jobs=1)
    model.fit(x64, y)
    model.save_model(out("model.json"))
    labels = model.predict(x64)
    probabilities = model.predict_proba(x64)
    write_expected(out("expected.csv"), labels, probabilities)

    # The original flow's keys, computed as it computes them (seed_flow.py, batch_processing).
    data = pd.read_csv(out("iris.csv"))
    texts = data.apply(lambda row: " ".join(map(str, row)), axis=1)
    keys = texts.apply(lambda text: hashlib.sha256(text.encode()).hexdigest())
    pd.DataFrame({"key": keys, "value": [CLASSES[i] for i in labels]}).to_csv(out("expected-keys.csv"), index=False)

    onnx_model = convert_xgboost(model, initial_types=[("input", FloatTensorType([None, len(COLUMNS)]))])
    onnx.save_model(onnx_model, out("model.onnx"))
    check_onnx(out("model.onnx"), x, labels, probabilities)

    logreg = LogisticRegression(max_iter=1000, random_state=0)
    logreg.fit(x64, y)
    logreg_onnx = convert_sklearn(
        logreg,
        initial_types=[("input", SklFloatTensorType([None, len(COLUMNS)]))],
        options={id(logreg): {"zipmap": False}},
    )
    onnx.save_model(logreg_onnx, out("logreg.onnx"))
    logreg_labels = logreg.predict(x64)
    logreg_probabilities = logreg.predict_proba(x64)
    write_expected(out("expected-logreg.csv"), logreg_labels, logreg_probabilities)
    check_onnx(out("logreg.onnx"), x, logreg_labels, logreg_probabilities)

    print(f"xgboost: {(labels == y).mean():.3f} training accuracy; logreg: {(logreg_labels == y).mean():.3f}")


if __name__ == "__main__":
    main()
