"""Without an engine, a run fails at once with the runner named and the fix: never minutes of
silence, a CLI download or a traceback."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

import pytest

from pipeline.engine.enginecheck import EngineUnreachableError, require_engine
from tests.conftest import copy_example, run_pipeline

if TYPE_CHECKING:
    from pathlib import Path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_missing_socket_is_named(tmp_path: Path):
    host = f"unix://{tmp_path}/nothing.sock"
    with pytest.raises(EngineUnreachableError, match="does not answer") as info:
        require_engine({"_EXPERIMENTAL_DAGGER_RUNNER_HOST": host, "PATH": ""})
    assert host in str(info.value)
    assert "scripts/engine up" in str(info.value)


def test_a_closed_tcp_port_is_named():
    host = f"tcp://127.0.0.1:{_closed_port()}"
    with pytest.raises(EngineUnreachableError, match="does not answer"):
        require_engine({"_EXPERIMENTAL_DAGGER_RUNNER_HOST": host})


def test_no_engine_and_no_cli_says_how_to_start_one(tmp_path: Path):
    with pytest.raises(EngineUnreachableError, match="no Dagger engine and no Dagger CLI"):
        require_engine({"PATH": str(tmp_path)})


def test_a_listening_engine_socket_or_a_session_passes(tmp_path: Path):
    path = tmp_path / "engine.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        cli = tmp_path / "dagger"
        cli.write_text("#!/bin/sh\n")
        cli.chmod(0o755)
        require_engine(
            {"_EXPERIMENTAL_DAGGER_RUNNER_HOST": f"unix://{path}", "PATH": str(tmp_path)}
        )
    require_engine({"DAGGER_SESSION_PORT": "1234", "PATH": ""})


@pytest.mark.parametrize("where", ["missing socket", "no cli"])
def test_build_without_an_engine_fails_fast_with_exit_2(tmp_path: Path, where: str):
    repo = copy_example(tmp_path / "repo", services=("worker",))
    env = {"PATH": "/usr/bin:/bin", "_EXPERIMENTAL_DAGGER_CLI_BIN": ""}
    if where == "missing socket":
        env["_EXPERIMENTAL_DAGGER_RUNNER_HOST"] = f"unix://{tmp_path}/gone.sock"
    else:
        env["_EXPERIMENTAL_DAGGER_RUNNER_HOST"] = ""
    started = time.monotonic()
    done = run_pipeline(
        "build", "--project-dir", str(repo), "--base-image", "localhost:1/none:1", env=env
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "fix:" in done.stderr
    assert time.monotonic() - started < 60  # bounded: not the SDK's minutes of retries
    assert not (repo / ".pipeline/cache").exists()


def test_the_engine_version_is_asked_of_a_cli_that_can_say(tmp_path: Path):
    from pipeline.engine.enginecheck import engine_version_by_cli

    says = tmp_path / "says"
    script = "[ \"$1 $2\" = 'core version' ] && printf 'v0.21.8' && exit 0\nexit 3\n"
    says.write_text(f"#!/bin/sh\n{script}")
    cannot = tmp_path / "cannot"  # v0.11's CLI: no `core` command
    cannot.write_text("#!/bin/sh\necho 'unknown command \"core\"' >&2\nexit 1\n")
    for cli in (says, cannot):
        cli.chmod(0o755)
    assert engine_version_by_cli(str(says), 5) == "v0.21.8"
    assert engine_version_by_cli(str(cannot), 5) is None
    assert engine_version_by_cli(str(tmp_path / "missing"), 5) is None
