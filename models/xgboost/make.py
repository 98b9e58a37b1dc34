#!/usr/bin/env python3
"""XGBoost models in XGBoost's own JSON format, for testing the predictor's reading of them
against XGBoost itself: one per supported objective, trained with missing values.

Writes, next to this script (deterministic: fixed seeds, one thread):
  rows.csv          500 rows of 8 features f0..f7; about 10% of the values are missing (empty
                    fields), so missing-value branches (`default_left`) are taken
  softprob.json     multi:softprob, 4 classes, 40 rounds of depth-6 trees (160 trees)
  softmax.json      multi:softmax, 3 classes, 30 rounds of depth 5
  binary.json       binary:logistic, 50 rounds of depth 6, base score from the labels' mean
  regression.json   reg:squarederror, 60 rounds of depth 7
  poisson.json      count:poisson, 3 rounds: an objective the predictor refuses
  expected.csv      per row, XGBoost's own outputs on rows.csv as pandas reads it:
                    `<model>_label` (predict) and `<model>_p<k>` (predict_proba) for the
                    classifiers, `regression_value` (predict) for the regressor

Re-make:  pip install -r ../iris/requirements.txt && python3 make.py
"""
import os

import numpy as np
import pandas as pd
import xgboost

HERE = os.path.dirname(os.path.abspath(__file__))
FEATURES = [f"f{i}" for i in range(8)]


def out(name: str) -> str:
    return os.path.join(HERE, name)


def main() -> None:
    rng = np.random.default_rng(7)
    train = rng.normal(size=(4000, len(FEATURES)))
    train[rng.random(train.shape) < 0.1] = np.nan
    filled = np.nan_to_num(train)
    signal = filled[:, 0] + 0.7 * filled[:, 1] - 0.5 * filled[:, 2] * filled[:, 3] + 0.3 * rng.normal(size=len(train))
    four = np.digitize(signal, np.quantile(signal, [0.25, 0.5, 0.75]))
    three = np.digitize(signal, np.quantile(signal, [1 / 3, 2 / 3]))
    two = (signal > np.quantile(signal, 0.7)).astype(int)
    value = 3.0 + 2.0 * signal + filled[:, 4] ** 2

    rows = rng.normal(size=(500, len(FEATURES))).round(3)
    rows[rng.random(rows.shape) < 0.1] = np.nan
    pd.DataFrame(rows, columns=FEATURES).to_csv(out("rows.csv"), index=False)
    # Score what the pipeline reads: the CSV's values, parsed as pandas (and the runner) parse them.
    x = pd.read_csv(out("rows.csv")).to_numpy(dtype=np.float64)

    common = dict(random_state=0, n_jobs=1)
    expected = {}
    models = {
        "softprob": (xgboost.XGBClassifier(n_estimators=40, max_depth=6, objective="multi:softprob", **common), four),
        "softmax": (xgboost.XGBClassifier(n_estimators=30, max_depth=5, objective="multi:softmax", **common), three),
        "binary": (xgboost.XGBClassifier(n_estimators=50, max_depth=6, objective="binary:logistic", **common), two),
    }
    for name, (model, labels) in models.items():
        model.fit(train, labels)
        model.save_model(out(f"{name}.json"))
        expected[f"{name}_label"] = model.predict(x).astype(int)
        probabilities = model.predict_proba(x)
        for k in range(probabilities.shape[1]):
            # A float32 widened to float64 and written with 9 digits: exact.
            expected[f"{name}_p{k}"] = probabilities[:, k].astype(np.float64)
    regressor = xgboost.XGBRegressor(n_estimators=60, max_depth=7, objective="reg:squarederror", **common)
    regressor.fit(train, value)
    regressor.save_model(out("regression.json"))
    expected["regression_value"] = regressor.predict(x).astype(np.float64)
    poisson = xgboost.XGBRegressor(n_estimators=3, max_depth=2, objective="count:poisson", **common)
    poisson.fit(train, np.abs(np.round(value)))
    poisson.save_model(out("poisson.json"))
    pd.DataFrame(expected).to_csv(out("expected.csv"), index=False, float_format="%.9g")
    print(f"wrote {len(models) + 2} models and the expected outputs of {len(x)} rows")


if __name__ == "__main__":
    main()
