"""The run's engine session (engine/connection.py), against the real engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from pipeline.engine.enginecheck import CLI_BIN, SESSION_PORT

if TYPE_CHECKING:
    from pathlib import Path

SILENT = "DAGGER_SILENT"  # the Dagger CLI's environment switch for --silent

# Three sessions in a process of their own (the SDK's default client is process-wide, and the
# test session's own connection must stay as it is): the engine's version, asked in a session
# of its own; a verbose run's session; a quiet run's session. Prints the version and whether
# the variable is left in this process's environment.
SESSIONS = """
import os, sys, anyio
from pipeline.engine import connection

async def main(kept):
    version = await connection.engine_version()
    async with connection.engine_session(verbose=True, kept=kept):
        pass
    async with connection.engine_session(verbose=False, kept=kept):
        pass
    print(version, connection.SILENT in os.environ)

anyio.run(main, __import__("pathlib").Path(sys.argv[1]))
"""


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_session_nobody_watches_starts_its_cli_silent_and_a_verbose_one_does_not(
    tmp_path: Path,
):
    """The CLI of a session whose progress nobody reads is told to be silent, so it keeps no
    span for a display (its CPU grew faster than the services); `-v` keeps the progress, and
    the variable is gone from the run's environment once the CLI has started."""
    real = os.environ.get(CLI_BIN) or shutil.which("dagger")
    assert real, "no Dagger CLI to wrap"
    seen = tmp_path / "seen"
    wrapper = tmp_path / "dagger"
    record = f'echo "silent=${{{SILENT}:-}}" >> {seen}'
    wrapper.write_text(f'#!/bin/sh\n{record}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in (SILENT, SESSION_PORT)}
    env[CLI_BIN] = str(wrapper)
    done = subprocess.run(
        [sys.executable, "-c", SESSIONS, str(tmp_path / "kept")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    version, left = done.stdout.split()[-2:]
    assert version.startswith("v0.")
    assert left == "False"
    assert seen.read_text().splitlines() == ["silent=1", "silent=", "silent=1"]
