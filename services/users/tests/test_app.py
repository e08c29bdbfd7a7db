from fastapi.testclient import TestClient

from users.app import app

client = TestClient(app)


def test_create_then_get():
    made = client.post("/users", json={"name": "Ada", "email": "ada@example.org"})
    assert made.status_code == 201
    got = client.get(f"/users/{made.json()['id']}")
    assert got.json()["name"] == "Ada"


def test_duplicate_email_conflicts():
    client.post("/users", json={"name": "B", "email": "b@example.org"})
    again = client.post("/users", json={"name": "B2", "email": "b@example.org"})
    assert again.status_code == 409


def test_unknown_user_404():
    assert client.get("/users/9999").status_code == 404
