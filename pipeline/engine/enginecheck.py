"""Whether a Dagger engine can be reached, asked before a session opens: a run without one
fails at once with the runner named and the fix, never after minutes of silence or a
download of a CLI. Dagger-free and quick (one connect at most, bounded)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import urllib.parse
from typing import TYPE_CHECKING

from pipeline.core.errors import PipelineError

if TYPE_CHECKING:
    from collections.abc import Mapping

RUNNER_HOST = "_EXPERIMENTAL_DAGGER_RUNNER_HOST"
CLI_BIN = "_EXPERIMENTAL_DAGGER_CLI_BIN"
SESSION_PORT = "DAGGER_SESSION_PORT"
CONNECT_TIMEOUT = 3.0
START_ONE = (
    "run under `dagger run` with the Dagger CLI installed, or start an engine and point "
    f"{RUNNER_HOST} at it (in this repository: scripts/engine up; "
    'eval "$(scripts/engine env)")'
)


class EngineUnreachableError(PipelineError):
    """No engine answers where the environment says one is, or none is named at all."""

    exit_code = 2


def _connect(family: int, address: str | tuple[str, int]) -> str:
    """ "" when something accepts a connection at ``address``, else why not."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(address)
        except OSError as exc:
            return exc.strerror or str(exc) or type(exc).__name__
    return ""


def require_engine(environ: Mapping[str, str] | None = None) -> None:
    """Raise EngineUnreachableError unless an engine can be reached the way the SDK will try."""
    env = os.environ if environ is None else environ
    if env.get(SESSION_PORT):
        return  # inside `dagger run`: the CLI already holds a session
    host = env.get(RUNNER_HOST)
    if host:
        url = urllib.parse.urlsplit(host)
        why = ""
        if url.scheme == "unix":
            why = _connect(socket.AF_UNIX, url.path)
        elif url.scheme == "tcp":
            try:
                port = url.port
            except ValueError:
                port = None
            if not url.hostname or port is None:
                why = "not a host:port"
            else:
                why = _connect(socket.AF_INET, (url.hostname, port))
        # other schemes (docker-container://, kube-pod://, ...) are the CLI's to reach
        if why:
            raise EngineUnreachableError(
                f"the Dagger engine at {RUNNER_HOST}={host} does not answer ({why}); fix: "
                "start it (here: scripts/engine up), or point the variable at a running engine"
            )
        if not (env.get(CLI_BIN) or shutil.which("dagger", path=env.get("PATH"))):
            raise EngineUnreachableError(
                f"{RUNNER_HOST} is set but no Dagger CLI is there to reach it; fix: put the "
                f"`dagger` CLI on PATH or name it in {CLI_BIN}"
            )
        return
    if not (env.get(CLI_BIN) or shutil.which("dagger", path=env.get("PATH"))):
        raise EngineUnreachableError(f"no Dagger engine and no Dagger CLI; fix: {START_ONE}")


def cli_version(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The Dagger CLI a session would use, and its version (``v0.21.8``); raises
    EngineUnreachableError, naming the fix, when there is none or it does not answer."""
    env = os.environ if environ is None else environ
    cli = env.get(CLI_BIN) or shutil.which("dagger", path=env.get("PATH"))
    if not cli:
        raise EngineUnreachableError(f"no Dagger CLI on PATH nor in {CLI_BIN}; fix: {START_ONE}")
    try:
        done = subprocess.run(
            [cli, "version"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineUnreachableError(
            f"the Dagger CLI {cli} does not run ({exc}); fix: reinstall it"
        ) from None
    found = re.search(r"\bv\d+\.\d+\.\d+\S*", done.stdout)
    if done.returncode != 0 or not found:
        said = (done.stderr or done.stdout).strip().splitlines()[:1]
        raise EngineUnreachableError(
            f"`{cli} version` says {said[0] if said else 'nothing'!r} (exit {done.returncode}); "
            "fix: reinstall the Dagger CLI"
        )
    return cli, found[0]


def engine_version_by_cli(cli: str, timeout: float) -> str | None:
    """The engine's version as the CLI asks it (``dagger core version``: a session of the
    CLI's own, no SDK to import), or None when this CLI cannot say (v0.11 has no ``core``)."""
    try:
        done = subprocess.run(
            [cli, "core", "version"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.fullmatch(r"\s*(v\d+\.\d+\.\d+\S*)\s*", done.stdout)
    return found[1] if done.returncode == 0 and found else None
