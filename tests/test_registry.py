"""Every wait on a registry is bounded and ends in one line naming the registry and the fix:
against local servers on 127.0.0.1 that accept connections and never answer, that refuse
them, or that answer 429 and 5xx for a while. No engine."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Self

import pytest

from pipeline.core import errors
from pipeline.edges import referrers, registry
from tests.conftest import run_pipeline

if TYPE_CHECKING:
    from collections.abc import Iterator

# Generous bounds that tell "bounded" from "hung" (before: a refused connection took 135 s,
# a silent registry never ended); the measured times are about 2 s and 22 s.
REFUSED_WITHIN = 30.0
SILENT_WITHIN = 60.0


@pytest.fixture
def silent() -> Iterator[str]:
    """host:port of a server that accepts every connection and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def closed() -> str:
    """host:port where nothing listens: connections are refused."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


def _one_clear_line(stderr: str, host: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert f"registry {host} " in lines[0]
    assert "; fix: " in lines[0]
    return lines[0]


def test_verify_against_a_silent_registry_ends_in_one_line(silent: str):
    started = time.monotonic()
    done = run_pipeline("verify", f"{silent}/acme/users:latest")
    took = time.monotonic() - started
    assert done.returncode == 1
    line = _one_clear_line(done.stderr, silent)
    assert "accepted the connection but did not answer" in line
    assert took < SILENT_WITHIN, took


def test_verify_against_a_closed_port_ends_in_one_line(closed: str):
    started = time.monotonic()
    done = run_pipeline("verify", f"{closed}/acme/users:latest")
    took = time.monotonic() - started
    assert done.returncode == 1
    line = _one_clear_line(done.stderr, closed)
    assert "refused the connection" in line
    assert f"a registry runs at {closed}" in line
    assert took < REFUSED_WITHIN, took


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short timeouts for the in-process tests (the policy is the same, the waits shorter)."""
    monkeypatch.setattr(registry, "READ_TIMEOUT", 0.5)
    monkeypatch.setattr(registry, "CONNECT_TIMEOUT", 0.5)


@pytest.mark.usefixtures("quick")
def test_resolve_says_unknown_when_the_registry_is_silent_or_closed(silent: str, closed: str):
    for host in (silent, closed):
        started = time.monotonic()
        assert registry.resolve(f"{host}/library/python:3.11") is None
        assert time.monotonic() - started < REFUSED_WITHIN


@pytest.mark.usefixtures("quick")
def test_pushing_an_attestation_to_a_silent_registry_fails_bounded(silent: str):
    client = referrers.Client(silent)
    started = time.monotonic()
    with pytest.raises(errors.PipelineError) as raised:
        client.attach("acme/users", "sha256:" + "0" * 64, "t", b"{}", "application/json")
    assert isinstance(raised.value, referrers.RegistryError)
    assert raised.value.exit_code == 1
    assert f"registry {silent} accepted the connection but did not answer" in str(raised.value)
    assert time.monotonic() - started < REFUSED_WITHIN


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": referrers.MANIFEST}).encode()


class _Flaky:
    """A registry that answers ``status`` to the first ``failures`` requests, then the
    manifest above; counts the requests."""

    def __init__(self, status: int, failures: int) -> None:
        self.requests = 0
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                flaky.requests += 1
                failing = flaky.requests <= failures
                body = b'{"errors":[]}' if failing else MANIFEST
                self.send_response(status if failing else 200)
                self.send_header("Retry-After", "3600")  # capped: no run waits an hour
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status", [429, 503])
def test_passing_answers_are_retried(status: int):
    with _Flaky(status, failures=registry.ATTEMPTS - 1) as flaky:
        body, _, digest = referrers.Client(flaky.host).manifest("acme/users", "latest")
    assert body == MANIFEST
    assert digest == "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
    assert flaky.requests == registry.ATTEMPTS


def test_retries_end_with_the_registry_named():
    started = time.monotonic()
    with _Flaky(429, failures=100) as flaky, pytest.raises(referrers.RegistryError) as raised:
        referrers.Client(flaky.host).manifest("acme/users", "latest")
    assert flaky.requests == registry.ATTEMPTS
    assert "429" in str(raised.value)
    assert time.monotonic() - started < registry.WORST_CASE


def test_once_makes_a_value_once_for_threads_that_ask_together_and_again_after_a_failure():
    """Eight threads asking for one key at once get the one value made by one of them (the
    blob uploads and the result store's config rely on it); keys apart are made apart; a make
    that raised leaves the key unmade for the next asker."""
    once: registry.Once[str, int] = registry.Once()
    made: list[str] = []

    def make(key: str) -> int:
        made.append(key)
        time.sleep(0.05)  # the others ask while the first makes it
        return len(made)

    values = registry.side_by_side(lambda _: once.get("config", lambda: make("config")), range(8))
    assert values == [1] * 8 and made == ["config"]
    assert once.get("other", lambda: make("other")) == 2

    def fail() -> int:
        raise RuntimeError("the registry refused it")

    with pytest.raises(RuntimeError):
        once.get("late", fail)
    assert once.get("late", lambda: make("late")) == 3
    assert made == ["config", "other", "late"]


def test_keyed_locks_let_one_thread_in_per_key_and_different_keys_side_by_side():
    locks: registry.KeyedLocks[str] = registry.KeyedLocks()
    b_ran = threading.Event()
    saw_b: list[bool] = []
    inside, most = [0], [0]  # threads holding "a" now, and at most
    guard = threading.Lock()

    def work(key: str) -> None:
        with locks.held(key):
            if key == "b":
                b_ran.set()
                return
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            saw_b.append(b_ran.wait(timeout=5))  # "b" is not held back by "a"'s lock
            time.sleep(0.02)
            with guard:
                inside[0] -= 1

    registry.side_by_side(work, ["a", "a", "a", "b"], at_once=4)
    assert most == [1]
    assert saw_b == [True, True, True]
