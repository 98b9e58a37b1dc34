#!/usr/bin/env python3
"""Larger tree ensembles for testing the predictor's fast tree engine against tract and XGBoost.

Writes, next to this script (deterministic):
  rows.csv                  400 rows of 10 features f0..f9; about 10% of the values are missing
                            (empty fields), so missing-value branches are taken
  deep-classifier.onnx      XGBoost, 4 classes, 60 rounds of depth-8 trees (240 trees), trained
                            with missing values: TreeEnsembleClassifier with
                            nodes_missing_value_tracks_true
  expected-classifier.csv   XGBoost's own label and class probabilities per row
  deep-regressor.onnx       XGBoost regressor, 80 depth-7 trees, also with missing values:
                            TreeEnsembleRegressor (which tract itself cannot run)
  forest-regressor.onnx     scikit-learn random forest regressor, 25 trees of depth 10 (no
                            missing values in training; `<=` branches, AVERAGE-style weights)
  expected-regressors.csv   per row: XGBoost's prediction, and onnxruntime's for the forest on the
                            same rows (a missing value there takes the false branch)

Re-make:  pip install -r ../iris/requirements.txt && python3 make.py
"""
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
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestRegressor

HERE = os.path.dirname(os.path.abspath(__file__))
FEATURES = 10
ROWS = 400


def out(name: str) -> str:
    return os.path.join(HERE, name)


def run_onnx(path: str, x: np.ndarray):
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def main() -> None:
    x, y = make_classification(
        n_samples=6000, n_features=FEATURES, n_informative=7, n_redundant=2, n_classes=4, random_state=0
    )
    x = x.round(3)
    rng = np.random.default_rng(0)
    x[rng.random(x.shape) < 0.1] = np.nan
    columns = [f"f{i}" for i in range(FEATURES)]
    pd.DataFrame(x[:ROWS], columns=columns).to_csv(out("rows.csv"), index=False)
    # What the pipeline scores: the CSV as read back (empty fields are NaN).
    rows = pd.read_csv(out("rows.csv")).to_numpy(dtype=np.float64)
    rows32 = rows.astype(np.float32)

    classifier = xgboost.XGBClassifier(n_estimators=60, max_depth=8, random_state=0, n_jobs=1)
    classifier.fit(x, y)
    onnx.save_model(
        convert_xgboost(classifier, initial_types=[("input", FloatTensorType([None, FEATURES]))]),
        out("deep-classifier.onnx"),
    )
    labels = classifier.predict(rows)
    probabilities = classifier.predict_proba(rows)
    expected = pd.DataFrame({"label": labels.astype(int)})
    for c in range(probabilities.shape[1]):
        expected[f"p_{c}"] = probabilities[:, c].astype(np.float64)
    expected.to_csv(out("expected-classifier.csv"), index=False, float_format="%.9g")
    onnx_labels, onnx_probabilities = run_onnx(out("deep-classifier.onnx"), rows32)
    assert (onnx_labels == labels).all(), "classifier: onnxruntime disagrees with XGBoost"
    print(f"classifier: onnxruntime within {np.abs(onnx_probabilities - probabilities).max():.2e} of XGBoost")

    target = np.nan_to_num(x, nan=0.0) @ rng.normal(size=FEATURES) + rng.normal(scale=0.1, size=len(x))
    regressor = xgboost.XGBRegressor(n_estimators=80, max_depth=7, random_state=0, n_jobs=1)
    regressor.fit(x, target)
    onnx.save_model(
        convert_xgboost(regressor, initial_types=[("input", FloatTensorType([None, FEATURES]))]),
        out("deep-regressor.onnx"),
    )
    xgb_values = regressor.predict(rows)
    (onnx_values,) = run_onnx(out("deep-regressor.onnx"), rows32)
    print(f"xgboost regressor: onnxruntime within {np.abs(onnx_values[:, 0] - xgb_values).max():.2e} of XGBoost")

    forest = RandomForestRegressor(n_estimators=25, max_depth=10, random_state=0, n_jobs=1)
    forest.fit(np.nan_to_num(x, nan=0.0), target)
    onnx.save_model(
        convert_sklearn(forest, initial_types=[("input", SklFloatTensorType([None, FEATURES]))]),
        out("forest-regressor.onnx"),
    )
    (forest_values,) = run_onnx(out("forest-regressor.onnx"), rows32)
    pd.DataFrame({"xgboost": xgb_values.astype(np.float64), "forest": forest_values[:, 0].astype(np.float64)}).to_csv(
        out("expected-regressors.csv"), index=False, float_format="%.9g"
    )


if __name__ == "__main__":
    main()
