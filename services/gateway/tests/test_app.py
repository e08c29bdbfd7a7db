from fastapi.testclient import TestClient

from gateway.app import app, upstream

client = TestClient(app)


def test_health():
    assert client.get("/health").json() == {"status": "ok"}


def test_upstream_url_joins_paths():
    assert upstream("users", "users/1").endswith("/users/1")


def test_unknown_route_is_404():
    assert client.get("/api/nope/1").status_code == 404


def test_unreachable_upstream_is_502(monkeypatch):
    monkeypatch.setitem(__import__("gateway.app").app.ROUTES, "users", "http://127.0.0.1:9")
    assert client.get("/api/users/1").status_code == 502
