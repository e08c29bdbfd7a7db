"""A loopback proxy in front of the local registry that injects faults by rule: answers with
an error status, drops the connection, holds a request until stopped, or passes it to the
registry and answers late or as a gateway that gave up on it. It can also demand
credentials: HTTP Basic on every request, or as Docker Hub, GHCR and most registries do,
Docker's token protocol (a Bearer challenge naming the scope a request needs, a token endpoint
that grants tokens of that scope for the credentials, each token good for its scope only).
The engine reaches it as any registry on localhost (plain HTTP)."""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import re
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, Self
from urllib.parse import parse_qs, urlsplit

Action = Literal["status", "reset", "hold", "late", "gateway"]
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Fault:
    """Requests whose method and path match get ``action`` instead of the registry's answer,
    ``times`` times (None: always). "late" and "gateway" pass the request to the registry,
    then wait ``delay`` seconds and give its answer ("late") or ``status`` ("gateway")."""

    method: str
    path: str  # a regular expression searched in the request path
    action: Action = "status"
    status: int = 500
    times: int | None = None
    hits: int = 0
    delay: float = 0.0
    waiting: int = 0  # requests in their delay now
    most: int = 0  # the most that were in their delay at once

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return method == self.method and re.search(self.path, path) is not None


@dataclass
class FaultyRegistry:
    upstream: str  # host:port of the real registry
    credentials: tuple[str, str] | None = None
    # Docker's token protocol instead of Basic on every request: tokens from /token (for
    # ``credentials`` when set, else to anyone), each good for the scopes it was asked for
    tokens: bool = False
    faults: list[Fault] = field(default_factory=list)
    # (method, path, status answered, or the action taken)
    log: list[tuple[str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the proxy's own failures

    def __post_init__(self) -> None:
        self._released = threading.Event()
        self._lock = threading.Lock()
        self.counting = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._server.errors = self.errors
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._granted: dict[str, set[tuple[str, str]]] = {}  # token: (repository, action)s
        self._serial = itertools.count(1)

    @property
    def address(self) -> str:
        return f"localhost:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def record(self, method: str, path: str, outcome: str) -> None:
        with self._lock:
            self.log.append((method, path, outcome))

    def _basic(self, header: str | None) -> bool:
        if self.credentials is None:
            return True
        expected = base64.b64encode(":".join(self.credentials).encode()).decode()
        return header == f"Basic {expected}"

    def authorized(self, header: str | None, needs: set[tuple[str, str]]) -> bool:
        """Whether a request with this Authorization header may do what it ``needs``."""
        if not self.tokens:
            return self._basic(header)
        token = (header or "").removeprefix("Bearer ")
        with self._lock:
            granted = self._granted.get(token) if header != token else None
        return granted is not None and needs <= granted

    def grant(self, header: str | None, scopes: list[str]) -> str | None:
        """A token for the scopes asked (``repository:NAME:ACTION[,ACTION]``), or None for
        wrong credentials."""
        if not self._basic(header):
            return None
        granted = set()
        for scope in " ".join(scopes).split():
            _, name, actions = scope.split(":")
            granted |= {(name, action) for action in actions.split(",")}
        with self._lock:
            token = f"token-{next(self._serial)}"
            self._granted[token] = granted
        return token

    def gate(
        self, method: str, path: str, header: str | None
    ) -> tuple[int, dict[str, str], bytes] | None:
        """The answer to a request that does not reach the registry (a token asked for, or
        no right credentials), or None."""
        if self.tokens and urlsplit(path).path == "/token":
            token = self.grant(header, parse_qs(urlsplit(path).query).get("scope", []))
            self.record(method, path, "token" if token else "401")
            if token is None:
                return 401, {}, b'{"details":"incorrect username or password"}'
            return 200, {}, json.dumps({"token": token}).encode()
        needs = _needs(method, path)
        if self.authorized(header, needs):
            return None
        self.record(method, path, "401")
        challenge = {"WWW-Authenticate": self.challenge(needs)}
        return 401, challenge, b'{"errors":[{"code":"UNAUTHORIZED"}]}'

    def challenge(self, needs: set[tuple[str, str]]) -> str:
        if not self.tokens:
            return 'Basic realm="faulty"'
        actions: dict[str, list[str]] = {}
        for name, action in sorted(needs):
            actions.setdefault(name, []).append(action)
        scope = " ".join(f"repository:{n}:{','.join(a)}" for n, a in actions.items())
        return f'Bearer realm="http://{self.address}/token",service="faulty",scope="{scope}"'

    def hold(self) -> None:
        self._released.wait()


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() != "chunked":
        return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
    chunks = []
    while size := int(handler.rfile.readline().strip().split(b";")[0], 16):
        chunks.append(handler.rfile.read(size))
        handler.rfile.readline()
    handler.rfile.readline()
    return b"".join(chunks)


_REPOSITORY = re.compile(r"^/v2/(.+?)/(?:blobs|manifests|tags|referrers)/")


def _needs(method: str, path: str) -> set[tuple[str, str]]:
    """The (repository, action) pairs a registry request needs: pull to read, push to write,
    and for a cross-repository mount pull on the repository it mounts from."""
    url = urlsplit(path)
    found = _REPOSITORY.match(url.path)
    if found is None:
        return set()
    name = found[1]
    if method in ("GET", "HEAD"):
        return {(name, "pull")}
    needs = {(name, "pull"), (name, "push")}
    source = parse_qs(url.query).get("from")
    if method == "POST" and source:
        needs.add((source[0], "pull"))
    return needs


def _forward(
    upstream: str, handler: BaseHTTPRequestHandler, body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """The request as the real registry answers it (the Host header kept, so the upload
    locations it returns lead back through the proxy)."""
    conn = http.client.HTTPConnection(upstream, timeout=120)
    headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_HEADERS}
    headers["Content-Length"] = str(len(body))
    try:
        conn.request(handler.command, handler.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    kept = {
        k: v
        for k, v in response.getheaders()
        if k.lower() not in HOP_HEADERS and k.lower() != "content-length"
    }
    return response.status, kept, data


def _passed(
    registry: FaultyRegistry, handler: BaseHTTPRequestHandler, fault: Fault | None, body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """The request passed to the registry; its answer, or for a fault the answer it gives."""
    status, headers, data = _forward(registry.upstream, handler, body)
    registry.record(handler.command, handler.path, str(status))
    if fault is not None:
        with registry.counting:
            fault.waiting += 1
            fault.most = max(fault.most, fault.waiting)
        time.sleep(fault.delay)
        with registry.counting:
            fault.waiting -= 1
        if fault.action == "gateway":
            registry.record(handler.command, handler.path, f"gateway {fault.status}")
            return fault.status, {}, b"gateway gave up"
    return status, headers, data


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    errors: list[str]

    def handle_error(self, request: object, client_address: object) -> None:  # noqa: ARG002
        """Kept for the test to show, not printed: dropped connections are expected here."""
        self.errors.append(traceback.format_exc(limit=3))


def _handler(registry: FaultyRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
            pass

        def _answer(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _serve(self) -> None:
            method, path = self.command, self.path
            body = _read_body(self)
            refusal = registry.gate(method, path, self.headers.get("Authorization"))
            if refusal is not None:
                self._answer(*refusal)
                return
            fault = registry.fault_for(method, path)
            if fault is None or fault.action in ("late", "gateway"):
                self._answer(*_passed(registry, self, fault, body))
                return
            registry.record(
                method, path, str(fault.status) if fault.action == "status" else fault.action
            )
            if fault.action == "status":
                self._answer(fault.status, {"Retry-After": "0"}, b'{"errors":[]}')
                return
            if fault.action == "hold":
                registry.hold()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _serve  # noqa: N815

    return Handler
