from fastapi.testclient import TestClient

from inference.app import app
from inference.model import load
from inference.train import train


def test_shipped_model_predicts_known_flowers():
    model = load()
    assert model.predict([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]) == ["setosa", "virginica"]


def test_training_reproduces_the_shipped_accuracy():
    assert train()["train_accuracy"] >= 0.95


def test_http_predict_and_bad_shape():
    client = TestClient(app)
    ok = client.post("/predict", json={"rows": [[5.1, 3.5, 1.4, 0.2]]})
    assert ok.json() == {"predictions": ["setosa"]}
    assert client.post("/predict", json={"rows": [[1.0]]}).status_code == 422
