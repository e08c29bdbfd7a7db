"""Train the iris classifier and write it as JSON data the service ships.

    python -m inference.train inference/model.json
"""

import json
import sys
from pathlib import Path

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def train() -> dict:
    data = load_iris()
    model = LogisticRegression(max_iter=500, random_state=0).fit(data.data, data.target)
    return {
        "classes": [str(data.target_names[c]) for c in model.classes_],
        "coef": model.coef_.round(6).tolist(),
        "intercept": model.intercept_.round(6).tolist(),
        "features": list(data.feature_names),
        "train_accuracy": round(float(model.score(data.data, data.target)), 4),
    }


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("model.json"))
    out.write_text(json.dumps(train(), indent=1) + "\n")
