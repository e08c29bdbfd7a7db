"""Health probes against the real engine: gRPC by the standard health protocol, TCP and HTTP,
each bounded: a server that never listens fails after its start period, an HTTP error
answer fails at once, a service that crashes is reported by its own exit code and log, and
the reason says which."""

from __future__ import annotations

import json
import textwrap
from typing import TYPE_CHECKING

import pytest

from tests.conftest import copy_example, pipeline_in

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

GREETER = """
import grpc
from concurrent import futures
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
servicer = health.HealthServicer()
servicer.set("", health_pb2.HealthCheckResponse.SERVING)
servicer.set("greeter", health_pb2.HealthCheckResponse.SERVING)
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
server.add_insecure_port("[::]:50051")
server.start()
server.wait_for_termination()
"""


def service(repo: Path, name: str, manifest: str, files: dict[str, str]) -> None:
    folder = repo / "services" / name
    for rel, text in {"service.toml": manifest, **files}.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(textwrap.dedent(text))


def test_probes_of_each_kind_pass_or_fail_with_a_reason(tmp_path: Path, base_image: str):
    repo = copy_example(tmp_path / "repo", services=("worker",))
    grpc_files = {
        "greeter/__init__.py": "",
        "greeter/__main__.py": GREETER,
        "requirements.txt": "grpcio==1.85.3\ngrpcio-health-checking==1.85.1\n",
    }
    # the same gRPC server, asked about a service it serves and about one it does not
    for name, asked in (("greeter", "greeter"), ("unknown", "no-such-service")):
        manifest = f"""
        tier = "base"
        command = ["python", "-m", "greeter"]
        port = 50051
        requirements = "requirements.txt"
        health = {{ grpc = "{asked}", start_period = 60 }}
        """
        service(repo, name, manifest, grpc_files)
    service(
        repo,
        "silent",
        """
        tier = "base"
        command = "sleep 600"
        port = 8000
        health = { tcp = true, start_period = 3, timeout = 1 }
        """,
        {"silent/__init__.py": ""},
    )
    service(
        repo,
        "crashing",
        """
        tier = "base"
        command = ["python", "-c", "import sys; print('loading config'); sys.exit('no DB_URL set')"]
        port = 8000
        health = { tcp = true, start_period = 3, timeout = 1 }
        """,
        {"crashing/__init__.py": ""},
    )
    service(
        repo,
        "missing",
        """
        tier = "base"
        command = ["python", "-m", "http.server", "8000"]
        port = 8000
        health = { http = "/no-such-page", start_period = 120 }
        """,
        {"missing/__init__.py": ""},
    )
    report = tmp_path / "report.json"
    done = pipeline_in(repo, base_image, "build", "--report", str(report), "--jobs", "4")
    assert done.returncode == 1, done.stderr
    results = {s["service"]: s for s in json.loads(report.read_text())["services"]}
    assert results["greeter"]["status"] == "ok", results["greeter"]["reason"]
    assert results["greeter"]["tests"]["health"] is True
    unknown = results["unknown"]
    assert unknown["tests"]["health"] is False
    assert unknown["reason"].startswith("health: health check failed: gRPC NOT_FOUND")
    silent = results["silent"]
    assert silent["tests"]["health"] is False
    assert "port 8000 not answering" in silent["reason"]
    assert "within start_period + timeout = 4s" in silent["reason"]
    # the failure shows what the service itself said
    crashing = results["crashing"]["reason"]
    assert crashing.startswith("health: health check failed: port 8000 not answering"), crashing
    assert "the service's log (last 20 lines):" in crashing
    assert "  loading config\n  no DB_URL set" in crashing
    missing = results["missing"]
    # an answer is final: no waiting out the 120 s start period
    assert missing["reason"].startswith("health: health check failed: HTTP 404 from /no-such-page")
    assert results["worker"]["status"] == "ok"


CRASHING = """
tier = "base"
command = ["python", "-c", "import sys; print('loading config'); sys.exit('no DB_URL set')"]
port = 8000
health = { tcp = true, start_period = 20, timeout = 1 }
"""


def test_a_crashing_service_is_reported_by_its_own_exit_code_and_log(
    tmp_path: Path, base_image: str
):
    repo = copy_example(tmp_path / "repo", services=("-",))
    service(repo, "crashing", CRASHING, {"crashing/__init__.py": ""})
    service(
        repo,
        "killed",  # a service ended by a signal says which
        """
        tier = "base"
        command = "echo starting; kill -9 $$"
        port = 8000
        health = { tcp = true, start_period = 20, timeout = 1 }
        """,
        {"killed/__init__.py": ""},
    )
    service(
        repo,
        "silent",  # never listens: fails within start_period + timeout, not twice that
        """
        tier = "base"
        command = ["python", "-c", "import time; print('waiting', flush=True); time.sleep(600)"]
        port = 8000
        health = { tcp = true, start_period = 20, timeout = 1 }
        """,
        {"silent/__init__.py": ""},
    )
    service(
        repo,
        "loopback",  # listens on 127.0.0.1 only: no other container could reach it
        """
        tier = "base"
        command = ["python", "-m", "http.server", "8000", "--bind", "127.0.0.1"]
        port = 8000
        health = { http = "/", start_period = 3, timeout = 1 }
        """,
        {"loopback/__init__.py": ""},
    )
    report = tmp_path / "report.json"
    done = pipeline_in(repo, base_image, "build", "--report", str(report), "--jobs", "4")
    assert done.returncode == 1, done.stderr
    results = {s["service"]: s for s in json.loads(report.read_text())["services"]}
    crashing = results["crashing"]["reason"]
    assert results["crashing"]["tests"]["health"] is False
    assert crashing.startswith(
        "health: health check failed: port 8000 not answering: "
        "the service stopped (exit code 1) before it listened\n"
    ), crashing
    assert crashing.endswith("\n  loading config\n  no DB_URL set"), crashing
    assert "exit code: 125" not in crashing
    assert "import" not in crashing  # no program text: the service's own two lines only
    killed = results["killed"]["reason"]
    assert "the service stopped (killed by SIGKILL) before it listened" in killed, killed
    assert killed.endswith("\n  starting"), killed
    silent = results["silent"]
    assert silent["reason"].startswith("health: health check failed: port 8000 not answering")
    assert "within start_period + timeout = 21s" in silent["reason"]
    assert silent["reason"].endswith("\n  waiting")
    # bounded by its limit plus the exec's start, not the limit twice (the old second run)
    assert 21 <= silent["steps"]["health"] < 21 + 10, silent["steps"]
    loopback = results["loopback"]["reason"]
    assert loopback.startswith("health: health check failed: port 8000 not answering"), loopback
    assert "Serving HTTP on 127.0.0.1 port 8000" in loopback
