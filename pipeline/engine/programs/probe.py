"""The health check as it runs inside the service's own image, the way Docker's HEALTHCHECK runs
inside the container it checks.

It starts the service (the image's entrypoint and command) as its child, keeps the child's
output, and probes the container's own non-loopback address: a server that listens only on
127.0.0.1 fails here as it would for every other container. It ends 0 once the service answers
healthy, else 1 with the reason and the tail of the service's log on stderr, both as
``report`` formats them. Bounded like Docker's HEALTHCHECK: the server gets ``start_period`` to
start listening and each probe ``timeout``, all within ``start_period + timeout``; an HTTP
error answer fails at once; a service that stops fails at once with its exit code.

Run by the image's own Python with ``-I``: the standard library only, except grpcio (for the
gRPC kind only, from a venv mounted beside it). Its one argument is the probe as JSON, the
fields of ``Probe``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import fcntl
import http.client
import importlib
import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import IO, Any

FAILED = "health check failed: "
LOG_HEADER = "the service's log (last {n} lines):"
_SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address
_LINE_CHARS = 400  # a log line longer than this is cut: the tail is for reading
_GRACE = 2.0  # seconds the service gets to stop after SIGTERM
# Seconds between attempts while nothing listens on the port yet (a refused connection): a
# server that starts in 0.6 s is found then, not at the next ``interval``. A refused connect
# costs the service nothing; every attempt that reaches it keeps to ``interval``. While
# refused, each attempt is a bare connect (``_refused_now``), not the kind's full attempt: an
# HTTP attempt through urllib, or a gRPC channel, 50 times a second took the probe 0.5-0.8
# CPU-s beside each starting service.
_LISTEN_PACE = 0.02


@dataclasses.dataclass(frozen=True)
class Probe:
    kind: str  # a key of ATTEMPTS
    port: int
    command: list[str]  # the service: the image's entrypoint and command
    target: str = ""  # the HTTP path or the gRPC service name
    timeout: float = 5.0
    interval: float = 0.5
    start_period: float = 30.0
    log_lines: int = 20
    host: str = ""  # where to probe; "" for the container's own non-loopback address

    @property
    def limit(self) -> float:
        return self.start_period + self.timeout


class Unhealthy(Exception):  # noqa: N818 - the outcome, not a fault of the program
    """A definite answer that fails the check at once."""


class Log:
    """The child's output, read as it comes: echoed to our stdout and its last lines kept.

    Echoed by the file descriptor, not through ``sys.stdout``: the reader is a daemon thread,
    still writing when the check ends, and a write through Python's buffered stdout holds its
    lock. The interpreter's exit then could not flush stdout and aborted (exit 134), which
    failed a healthy service's check."""

    def __init__(self, stream: IO[bytes], lines: int) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=lines)
        self._stream = stream
        self._out = sys.stdout.fileno()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in iter(self._stream.readline, b""):
            left = memoryview(raw)
            while left:
                left = left[os.write(self._out, left) :]
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line[:_LINE_CHARS] + ("..." if len(line) > _LINE_CHARS else ""))

    def tail(self, wait: float) -> list[str]:
        """The last lines, once the output ended (or after ``wait`` seconds: a process the
        service left behind may hold its output open)."""
        self._reader.join(wait)
        return list(self.lines)


def own_address() -> str:
    """The container's first non-loopback IPv4 address."""
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
            except OSError:  # no IPv4 address on this interface
                continue
        address = socket.inet_ntoa(answer[20:24])
        if not ipaddress.ip_address(address).is_loopback:
            return address
    raise Unhealthy("the container has no network address but loopback to probe")


def _refused_now(host: str, port: int, timeout: float) -> None:
    """Raise ConnectionRefusedError when a bare connect to the port is refused: nothing
    listens there yet. Anything else (accepted, a timeout, an address this cannot try) leaves
    it to the kind's full attempt."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            code = sock.connect_ex((host, port))
    except OSError:
        return
    if code == errno.ECONNREFUSED:
        raise ConnectionRefusedError(code, os.strerror(code))


def attempt(probe: Probe, host: str, timeout: float) -> tuple[bool, str]:
    """One probe: (True, _) healthy, (False, why) an answer that is not healthy yet.
    Raises OSError while nothing listens, Unhealthy on an answer that fails at once."""
    try:
        kind = ATTEMPTS[probe.kind]
    except KeyError:
        raise Unhealthy(f"unknown probe kind {probe.kind!r}") from None
    return kind(probe, host, timeout)


def _tcp(probe: Probe, host: str, timeout: float) -> tuple[bool, str]:
    socket.create_connection((host, probe.port), timeout=timeout).close()
    return True, ""


def _http(probe: Probe, host: str, timeout: float) -> tuple[bool, str]:
    url = f"http://{host}:{probe.port}{probe.target}"
    # the image's proxy variables are for its way out, not for its own port
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except http.client.HTTPException as exc:  # a server still starting, or not HTTP at all
        raise ConnectionError(f"no HTTP answer: {exc!r}") from exc
    why = f"HTTP {status} from {probe.target}"
    if not 200 <= status < 300:  # noqa: PLR2004 - the 2xx range
        raise Unhealthy(why)
    return True, why


def _grpc(probe: Probe, host: str, timeout: float) -> tuple[bool, str]:
    grpc: Any = importlib.import_module("grpc")
    health_pb2: Any = importlib.import_module("grpc_health.v1.health_pb2")
    health_pb2_grpc: Any = importlib.import_module("grpc_health.v1.health_pb2_grpc")
    # A channel of its own connection: gRPC shares connections between channels by default,
    # and a shared one refused while the server starts waits out a growing reconnect
    # back-off (up to 120 s), so a slow starter could never be reached within the limit.
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(f"{host}:{probe.port}", options=options) as channel:
        request = health_pb2.HealthCheckRequest(service=probe.target)
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ConnectionError(exc.details()) from exc
            return False, f"gRPC {code.name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    return status == "SERVING", f"gRPC health of {probe.target!r}: {status}"


# How each probe kind (core/config.py's PROBE_KINDS) asks a running service, and what the
# image needs installed beside this program for it (into a venv of its own, mounted).
ATTEMPTS: dict[str, Callable[[Probe, str, float], tuple[bool, str]]] = {
    "http": _http,
    "grpc": _grpc,
    "tcp": _tcp,
}
REQUIRES: dict[str, tuple[str, ...]] = {"grpc": ("grpcio-health-checking==1.85.1",)}


def _stopped(probe: Probe, code: int) -> str:
    how = f"exit code {code}"
    if code < 0:
        with contextlib.suppress(ValueError):
            how = f"killed by {signal.Signals(-code).name}"
    return f"port {probe.port} not answering: the service stopped ({how}) before it listened"


def _stop(child: subprocess.Popen[bytes], *, healthy: bool) -> None:
    """The service and what it started (its process group): SIGTERM, then SIGKILL; a healthy
    one SIGKILL at once, as `docker rm -f` stops it: how it shuts down is not what the
    check asks (a graceful shutdown took uvicorn 0.2 s), and its log is not read."""
    steps = [(signal.SIGTERM, _GRACE)] if not healthy else []
    for sig, wait in (*steps, (signal.SIGKILL, _GRACE)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(wait)
            return


def _refused(exc: OSError) -> bool:
    """Whether nothing listens on the port yet (urllib wraps the refusal in its own error)."""
    return isinstance(exc, ConnectionRefusedError) or isinstance(
        getattr(exc, "reason", None), ConnectionRefusedError
    )


def watch(probe: Probe, child: subprocess.Popen[bytes]) -> str | None:
    """Probe the running ``child`` until it is healthy (None) or the check fails (why)."""
    deadline = time.monotonic() + probe.limit
    why = "no answer"
    try:
        host = probe.host or own_address()
        while True:
            remaining = deadline - time.monotonic()
            if child.poll() is not None:
                return _stopped(probe, child.returncode)
            if remaining <= 0:
                return f"{why} (within start_period + timeout = {probe.limit:g}s)"
            pace, bound = probe.interval, min(probe.timeout, remaining)
            try:
                _refused_now(host, probe.port, bound)
                healthy, why = attempt(probe, host, bound)
                if healthy:
                    return None
            except OSError as exc:
                why = f"port {probe.port} not answering: {exc}"
                if _refused(exc):
                    pace = min(pace, _LISTEN_PACE)
            pause = min(pace, deadline - time.monotonic())
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(max(pause, 0))
    except Unhealthy as exc:
        return str(exc)


def report(why: str, lines: list[str], log_lines: int) -> str:
    """The reason and the service's last lines, as the pipeline reads them back."""
    body = [f"  {line}" for line in lines] or ["  (nothing)"]
    return "\n".join([FAILED + why, LOG_HEADER.format(n=log_lines), *body]) + "\n"


def check(probe: Probe) -> int:
    """Start the service, probe it, stop it: 0 healthy, 1 not (the report on stderr)."""
    env = dict(os.environ)
    env.pop("PIPELINE_PROBE_AT", None)  # the probe's own cache buster, not the service's
    env.setdefault("PYTHONUNBUFFERED", "1")  # a Python service's lines as it prints them
    try:
        child = subprocess.Popen(
            probe.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group, stopped whole
        )
    except OSError as exc:
        unstarted = f"the service could not start: {probe.command[0]}: {exc.strerror}"
        sys.stderr.write(report(unstarted, [], probe.log_lines))
        return 1
    assert child.stdout is not None  # noqa: S101 - asked for above
    log = Log(child.stdout, probe.log_lines)
    why: str | None = "the probe was stopped"
    try:
        why = watch(probe, child)
    finally:
        _stop(child, healthy=why is None)
    if why is None:
        return 0
    sys.stderr.write(report(why, log.tail(_GRACE), probe.log_lines))
    return 1


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: probe.py PROBE_JSON\n")
        return 2
    return check(Probe(**json.loads(argv[0])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
