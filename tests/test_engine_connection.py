"""The run's engine session (engine/connection.py), against the real engine."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

import pytest

from pipeline.engine import connection
from pipeline.engine.enginecheck import CLI_BIN, SESSION_PORT

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_session_nobody_watches_starts_its_cli_silent_and_a_verbose_one_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The CLI of a session whose progress nobody reads is told to be silent, so it keeps no
    span for a display (its CPU grew faster than the services); `-v` keeps the progress, and
    the variable is gone from this process once the CLI has started."""
    import anyio

    real = os.environ.get(CLI_BIN) or shutil.which("dagger")
    assert real, "no Dagger CLI to wrap"
    seen = tmp_path / "seen"
    wrapper = tmp_path / "dagger"
    record = f'echo "silent=${{DAGGER_SILENT:-}}" >> {seen}'
    wrapper.write_text(f'#!/bin/sh\n{record}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv(CLI_BIN, str(wrapper))
    monkeypatch.delenv(connection.SILENT, raising=False)
    monkeypatch.delenv(SESSION_PORT, raising=False)

    async def sessions() -> str:
        version = await connection.engine_version()
        async with connection.engine_session(verbose=True, kept=tmp_path / "kept"):
            pass
        async with connection.engine_session(verbose=False, kept=tmp_path / "kept"):
            pass
        return version

    assert anyio.run(sessions).startswith("v0.")
    assert seen.read_text().splitlines() == ["silent=1", "silent=", "silent=1"]
    assert connection.SILENT not in os.environ
