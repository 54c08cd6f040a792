"""scikit-learn reference for bench/train-vs-sklearn.ts.

Usage: sklearn_reference.py TASK TRAIN_CSV TEST_CSV
Both CSVs hold already-encoded numeric features (empty = missing) and a last column `target`
(class index for classification). Prints one JSON object: accuracy or RMSE and fit wall time for
HistGradientBoosting and for the linear baseline (StandardScaler + LogisticRegression / Ridge).
"""

import json
import sys
import time

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def load(path):
    data = np.genfromtxt(path, delimiter=",", skip_header=1, dtype=np.float64, filling_values=np.nan)
    return data[:, :-1].astype(np.float32), data[:, -1]


def main():
    task, train_path, test_path = sys.argv[1:4]
    X_train, y_train = load(train_path)
    X_test, y_test = load(test_path)
    out = {}
    if task == "regression":
        models = {
            "gbdt": HistGradientBoostingRegressor(random_state=0),
            "linear": make_pipeline(SimpleImputer(), StandardScaler(), Ridge(alpha=1.0)),
        }
    else:
        models = {
            "gbdt": HistGradientBoostingClassifier(random_state=0),
            "linear": make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=1000)),
        }
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(X_train, y_train)
        seconds = time.perf_counter() - start
        pred = model.predict(X_test)
        if task == "regression":
            score = float(np.sqrt(np.mean((pred - y_test) ** 2)))
        else:
            score = float(np.mean(pred == y_test))
        out[name] = {"score": score, "seconds": seconds}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
