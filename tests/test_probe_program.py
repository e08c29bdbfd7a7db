"""The health-check program that runs inside a service's image
(pipeline/engine/programs/probe.py), run on the host as the image runs it:
``python -I probe.py PROBE_JSON``, against real servers and crashing processes. No engine:
what the engine adds (the exec, the mounts) the engine tests in test_probes.py cover."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from pipeline.engine import probes
from pipeline.engine.programs import probe as probe_main

PROGRAM = Path(probe_main.__file__)
PY = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def run_probe(
    command: list[str], env: dict[str, str] | None = None, **fields: Any
) -> tuple[subprocess.CompletedProcess[str], float]:
    """The program as the container runs it, and how long it took."""
    probe = {"kind": "tcp", "port": 0, "command": command, "start_period": 10, "timeout": 1}
    probe.update(fields)
    started = time.monotonic()
    done = subprocess.run(
        [PY, "-I", str(PROGRAM), json.dumps(probe)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )
    return done, time.monotonic() - started


def http_server(port: int, bind: str = "0.0.0.0") -> list[str]:  # noqa: S104 - all addresses
    return [PY, "-m", "http.server", str(port), "--bind", bind]


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether process ``pid`` ended (or is a zombie waiting for its reaper)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def test_a_healthy_http_service_passes_and_is_stopped():
    port = free_port()
    done, _ = run_probe(http_server(port), kind="http", port=port, target="/")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    with pytest.raises(ConnectionRefusedError):  # the service does not outlive its check
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_service_that_listens_late_passes_within_its_start_period():
    port = free_port()
    late = f"import time; time.sleep(1.5); import runpy, sys; sys.argv[1:] = ['{port}']; "
    late += "runpy.run_module('http.server', run_name='__main__')"
    done, _ = run_probe([PY, "-c", late], port=port, start_period=20, interval=0.2)
    assert done.returncode == 0, done.stderr


def test_a_port_that_refuses_is_tried_again_at_once_not_after_the_interval():
    """While nothing listens yet, the probe does not wait ``interval`` between attempts: a
    server that listens after 0.5 s passes a check whose interval outlasts its limit."""
    port = free_port()
    late = f"import time; time.sleep(0.5); import runpy, sys; sys.argv[1:] = ['{port}']; "
    late += "runpy.run_module('http.server', run_name='__main__')"
    done, _ = run_probe(
        [PY, "-c", late], kind="http", port=port, target="/", start_period=4, interval=60
    )
    assert done.returncode == 0, done.stderr


def test_a_healthy_service_that_floods_its_output_passes():
    """The check ends while its reader still echoes the service's output, here stuck on a
    pipe nobody reads: the probe still exits 0 (it once aborted at exit with 134, failing a
    healthy service)."""
    port = free_port()
    flood = (
        "import socket, sys; s = socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('0.0.0.0', {port})); s.listen()\n"
        "while True: sys.stdout.buffer.write(b'x' * 300 + b'\\n'); sys.stdout.flush()"
    )
    probe = {"kind": "tcp", "port": port, "command": [PY, "-c", flood], "timeout": 1}
    with subprocess.Popen(
        [PY, "-I", str(PROGRAM), json.dumps(probe)],
        stdout=subprocess.PIPE,  # never read while it runs: the echo blocks once it is full
        stderr=subprocess.PIPE,
    ) as checking:
        code = checking.wait(timeout=30)
        said = checking.stderr.read().decode() if checking.stderr else ""
    assert code == 0, said


def test_a_crashing_service_is_reported_by_its_exit_code_and_log_at_once():
    crash = "import sys; print('loading config'); sys.exit('no DB_URL set')"
    done, took = run_probe([PY, "-c", crash], port=free_port(), start_period=60)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0].startswith("health check failed: port ")
    assert lines[0].endswith(": the service stopped (exit code 1) before it listened")
    assert lines[1:] == [
        "the service's log (last 20 lines):",
        "  loading config",
        "  no DB_URL set",
    ]
    assert took < 30


def test_a_service_killed_by_a_signal_says_which():
    done, _ = run_probe(["sh", "-c", "echo starting; kill -9 $$"], port=free_port())
    assert done.returncode == 1
    assert "the service stopped (killed by SIGKILL) before it listened" in done.stderr
    assert done.stderr.endswith("\n  starting\n")


def test_a_command_that_does_not_exist_is_named():
    done, _ = run_probe(["no-such-server", "--port", "8000"], port=free_port())
    assert done.returncode == 1
    assert done.stderr.startswith(
        "health check failed: the service could not start: no-such-server: No such file"
    )


def test_a_server_that_never_listens_fails_within_start_period_plus_timeout():
    code = "print('waiting', flush=True); import time; time.sleep(600)"
    done, took = run_probe([PY, "-c", code], port=free_port(), start_period=2, timeout=1)
    assert done.returncode == 1
    first = done.stderr.splitlines()[0]
    assert "not answering" in first
    assert first.endswith("(within start_period + timeout = 3s)"), first
    assert done.stderr.endswith("\n  waiting\n")
    assert 3 <= took < 3 + 10


def test_a_server_listening_on_loopback_only_fails_as_it_would_for_other_containers():
    port = free_port()
    done, _ = run_probe(http_server(port, "127.0.0.1"), port=port, start_period=2, timeout=1)
    assert done.returncode == 1
    assert f"port {port} not answering" in done.stderr
    assert f"Serving HTTP on 127.0.0.1 port {port}" in done.stderr


def test_an_http_error_answer_fails_at_once():
    port = free_port()
    done, took = run_probe(
        http_server(port), kind="http", port=port, target="/no-such-page", start_period=120
    )
    assert done.returncode == 1
    assert done.stderr.startswith("health check failed: HTTP 404 from /no-such-page\n")
    assert '"GET /no-such-page HTTP/1.1" 404' in done.stderr  # the server's own log line
    assert took < 60


def test_the_images_proxy_settings_do_not_reach_its_own_port():
    port = free_port()
    proxy = f"http://127.0.0.1:{free_port()}"
    done, _ = run_probe(
        http_server(port),
        env={"http_proxy": proxy, "HTTP_PROXY": proxy},
        kind="http",
        port=port,
        target="/",
    )
    assert done.returncode == 0, done.stderr


def test_the_log_keeps_the_last_lines():
    code = "for i in range(50): print('line', i)\nraise SystemExit(3)"
    done, _ = run_probe([PY, "-c", code], port=free_port(), log_lines=3)
    assert "(exit code 3)" in done.stderr
    assert done.stderr.splitlines()[1:] == [
        "the service's log (last 3 lines):",
        "  line 47",
        "  line 48",
        "  line 49",
    ]


def test_what_the_service_started_is_stopped_with_it(tmp_path: Path):
    port, pidfile = free_port(), tmp_path / "pid"
    script = f"sleep 600 & echo $! > {pidfile}; exec {PY} -m http.server {port}"
    done, took = run_probe(["sh", "-c", script], port=port)
    assert done.returncode == 0, done.stderr
    assert gone(int(pidfile.read_text()))
    # and a crashed service's leftovers neither hold the check open nor outlive it
    script = f"sleep 600 & echo $! > {pidfile}; echo bye; exit 3"
    done, took = run_probe(["sh", "-c", script], port=port)
    assert "(exit code 3)" in done.stderr
    assert done.stderr.endswith("\n  bye\n")
    assert took < 30
    assert gone(int(pidfile.read_text()))


def test_a_healthy_service_is_killed_not_asked_to_shut_down(tmp_path: Path):
    # as `docker rm -f` ends a checked container: its shutdown is not the check's, and a
    # slow one (uvicorn's graceful stop, a handler that flushes) would hold every check open
    said = tmp_path / "sigterm"

    def server(port: int) -> list[str]:
        program = (
            "import signal, pathlib, http.server, socketserver\n"
            f"signal.signal(signal.SIGTERM, lambda *_: pathlib.Path({str(said)!r}).touch())\n"
            f"socketserver.TCPServer(('', {port}), http.server.SimpleHTTPRequestHandler)"
            ".serve_forever()\n"
        )
        return [PY, "-c", program]

    port = free_port()
    done, _ = run_probe(server(port), kind="http", port=port, target="/")
    assert done.returncode == 0, done.stderr
    assert not said.exists()  # never sent SIGTERM
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    # a failing one is still asked to stop first, so that its last lines reach the report
    port = free_port()
    done, _ = run_probe(server(port), kind="http", port=port, target="/missing")
    assert "HTTP 404" in done.stderr, done.stderr
    assert said.exists()


def test_the_pipeline_reads_back_the_report_between_engine_lines():
    crash = "import sys; print('loading config'); sys.exit('no DB_URL set')"
    done, _ = run_probe([PY, "-c", crash], port=8000)
    stderr = f"[engine] note before\n{done.stderr}[engine] note after\n"
    assert probes.reason(stderr, 1) == (
        "health check failed: port 8000 not answering: the service stopped (exit code 1) "
        "before it listened\nthe service's log (last 20 lines):\n  loading config\n  no DB_URL set"
    )


def test_a_probe_that_could_not_run_gives_its_exit_code_and_output_not_its_source():
    why = probes.reason("sh: 1: python3: not found\n", 127)
    assert why == (
        "health check failed: the probe could not run (exit code 127)\n  sh: 1: python3: not found"
    )


def test_the_shipped_program_is_this_file():
    shipped = resources.files("pipeline.engine.programs").joinpath("probe.py")
    text = shipped.read_text(encoding="utf-8")
    assert probes.program_text() == text == PROGRAM.read_text(encoding="utf-8")


def test_every_probe_kind_a_config_can_name_is_one_the_program_probes():
    from pipeline.core.config import PROBE_KINDS, HealthSpec

    assert set(probe_main.ATTEMPTS) == set(PROBE_KINDS)
    assert set(probe_main.REQUIRES) <= set(PROBE_KINDS)
    assert HealthSpec(http="/healthz").target == "/healthz"
    assert HealthSpec(grpc="").target == ""
    assert HealthSpec(tcp=True).kind == "tcp"
    assert HealthSpec(tcp=True).target == ""
