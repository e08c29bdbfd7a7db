"""Health probes of a running image: HTTP, gRPC (the standard grpc.health.v1 protocol) or TCP,
each bounded like Docker's HEALTHCHECK: a server gets ``start_period`` to start listening and
each probe ``timeout``; a definite answer (an HTTP error status) fails at once.

The image runs as a Dagger service; the probe runs in a second container bound to it.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import dagger
from dagger import dag

from pipeline import compat, images
from pipeline.config import argv
from pipeline.errors import BuildError
from pipeline.layers import one_step

if TYPE_CHECKING:
    from pipeline.config import HealthSpec
    from pipeline.graph import Service
    from pipeline.settings import BuildSettings

GRPC_HEALTH = "grpcio-health-checking==1.85.1"
LOG_LINES, LOG_SECONDS = 20, 20.0
PROBE_VENV = "/opt/probe"

# One program for every kind; its only argument is the probe as JSON.
_PROBE = """
import json, socket, sys, time
p = json.loads(sys.argv[1])
host, port, kind, timeout = p["host"], p["port"], p["kind"], p["timeout"]
limit = p["start_period"] + timeout
deadline = time.monotonic() + limit

def fail(why):
    print("health check failed: " + why, file=sys.stderr)
    sys.exit(1)

def once():
    # (True, _) healthy; (False, why) a definite answer; OSError: not listening yet
    if kind == "tcp":
        socket.create_connection((host, port), timeout=timeout).close()
        return True, ""
    if kind == "http":
        import urllib.error, urllib.request
        url = "http://%s:%d%s" % (host, port, p["target"])
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return 200 <= r.status < 300, "HTTP %d from %s" % (r.status, p["target"])
        except urllib.error.HTTPError as exc:
            return False, "HTTP %d from %s" % (exc.code, p["target"])
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    with grpc.insecure_channel("%s:%d" % (host, port)) as channel:
        request = health_pb2.HealthCheckRequest(service=p["target"])
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ConnectionError(exc.details())
            return False, "gRPC %s: %s" % (exc.code().name, exc.details())
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return status == "SERVING", "gRPC health of %r: %s" % (p["target"], status)

why = "no answer"
while True:
    try:
        ok, why = once()
        if ok:
            sys.exit(0)
        if kind == "http":
            fail(why)
    except OSError as exc:
        why = "port %d not answering: %s" % (port, exc)
    if time.monotonic() > deadline:
        fail("%s (within start_period + timeout = %gs)" % (why, limit))
    time.sleep(p["interval"])
"""


def _prober(
    probe: HealthSpec, settings: BuildSettings, secrets: images.Secrets
) -> tuple[dagger.Container, str]:
    """The container a probe runs in, and its python."""
    if probe.kind != "grpc":
        return dag.container().from_(settings.base_image), "python3"
    python = f"{PROBE_VENV}/bin/python"
    install = one_step(
        ["uv", "venv", "-q", "--python", "python3", PROBE_VENV],
        ["uv", "pip", "install", "-q", "--python", python, GRPC_HEALTH],
    )
    return images.builder(settings, secrets=secrets).with_(compat.run(install)), python


async def health(
    service: Service, image: dagger.Container, settings: BuildSettings, secrets: images.Secrets
) -> None:
    """Start the image as a service and probe its port from a second container."""
    spec, probe = service.spec, service.spec.probe
    if spec.port is None or probe is None:
        return
    # The probe waits for the port itself, within its bounds; the engine's own port check
    # would wait with growing back-off, and forever for a server that never listens.
    listening = image.without_exposed_port(spec.port).with_exposed_port(
        spec.port, experimental_skip_healthcheck=True
    )
    server = compat.service(listening, argv(spec.command))
    target = {"http": probe.http, "grpc": probe.grpc, "tcp": ""}[probe.kind]
    config = {
        "host": service.name,
        "port": spec.port,
        "kind": probe.kind,
        "target": target,
        "timeout": probe.timeout,
        "interval": probe.interval,
        "start_period": probe.start_period,
    }
    prober, python = _prober(probe, settings, secrets)
    probe_argv = [python, "-c", _PROBE, json.dumps(config)]
    try:
        await (
            prober.with_service_binding(service.name, server)
            .with_env_variable("PIPELINE_PROBE_AT", str(time.time_ns()))  # never cached
            .with_(compat.run(probe_argv))
            .sync()
        )
    except dagger.ExecError as exc:
        why = next((ln for ln in reversed(exc.stderr.splitlines()) if "health check" in ln), "")
        if not why and list(exc.command) != probe_argv:  # the service ended before the probe
            why = (
                f"health check failed: port {spec.port} not answering: the service stopped "
                f"(exit code {exc.exit_code}) before it listened"
            )
        tail = await log_tail(image, argv(spec.command), probe.start_period + probe.timeout)
        why = why or exc.stderr.strip() or str(exc).strip()
        detail = f"{why}\nthe service's log (a fresh start, {tail}"
        raise BuildError(service.name, "health", detail) from exc


async def log_tail(image: dagger.Container, command: list[str], seconds: float) -> str:
    """What the service prints in its first seconds (at most 20 s), last lines only: a
    Dagger service's own output cannot be read back, so the image runs the command again."""
    limit = f"{min(seconds, LOG_SECONDS):g}"
    script = f'timeout -k 1 {limit} "$@" 2>&1 | tail -n {LOG_LINES}'
    out = await (
        image.with_env_variable("PYTHONUNBUFFERED", "1")
        .with_env_variable("PIPELINE_PROBE_AT", str(time.time_ns()))
        .with_(compat.run(["sh", "-c", script, "sh", *command]))
        .stdout()
    )
    lines = out.rstrip().splitlines()
    body = "\n".join(f"  {ln}" for ln in lines) if lines else "  (nothing)"
    return f"{limit}s, last {LOG_LINES} lines):\n{body}"
