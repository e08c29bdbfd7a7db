"""The shipped model, restored into a scikit-learn estimator."""

import json
from functools import cache
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

MODEL_FILE = Path(__file__).with_name("model.json")


class Model:
    def __init__(self, spec: dict) -> None:
        self.classes = spec["classes"]
        self.features = spec["features"]
        est = LogisticRegression()
        est.coef_ = np.asarray(spec["coef"])
        est.intercept_ = np.asarray(spec["intercept"])
        est.classes_ = np.arange(len(self.classes))
        self._est = est

    def predict(self, rows: list[list[float]]) -> list[str]:
        x = np.asarray(rows, dtype=float)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"each row needs {len(self.features)} features")
        return [self.classes[i] for i in self._est.predict(x)]


@cache
def load(path: Path = MODEL_FILE) -> Model:
    return Model(json.loads(path.read_text()))
