"""`pipeline doctor`: one line per piece a run needs, the fix named for each problem, exit 1
on any; on a healthy setup (a real engine) every line is ok and names the engine's version."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from typing import TYPE_CHECKING

import pytest

from pipeline.core.doctor import generation
from tests.conftest import ROOT, copy_example

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# what tells the SDK where an engine is: a broken setup is made by leaving them out
ENGINE_VARIABLES = ("_EXPERIMENTAL_DAGGER_RUNNER_HOST", "_EXPERIMENTAL_DAGGER_CLI_BIN")
PASSWORD = "s3cret-never-printed"  # noqa: S105 - a dummy, to look for in the output


def findings(output: str) -> dict[str, str]:
    """Each finding's line by its name: ``{"engine": "ok   engine     v0.21.8 at ..."}``."""
    found = re.findall(r"^(?:ok  |FAIL) (\w+(?: image)?) .*$", output, flags=re.MULTILINE)
    return dict(zip(found, _lines(output), strict=True))


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(r"^(ok  |FAIL) ", line)]


def doctor(
    *args: str, env: dict[str, str], keep_engine: bool = False, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline doctor ARGS`` with ``env`` over the test's environment, without
    the engine's variables unless ``keep_engine``."""
    dropped = () if keep_engine else (*ENGINE_VARIABLES, "DAGGER_SESSION_PORT")
    # and the pipeline's own settings (a shell with scripts/engine env names a base image
    # and a registry): a test gives those it wants
    base = {
        k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("PIPELINE_")
    }
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "doctor", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
        env={**base, **env},
    )


@pytest.fixture
def wants_credentials() -> Iterator[str]:
    """A registry (host:port) that answers /v2/ with 401 and a Basic challenge."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"localhost:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_broken_setup_is_named_piece_by_piece_with_each_fix(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pipeline.toml").write_text('base_image = "python:3.11"\n[tiers.base]\nbogus = 1\n')
    done = doctor("--project-dir", str(repo), env={"PATH": str(tmp_path / "empty")})
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    found = findings(done.stdout)
    assert list(found) == ["config", "disk", "sdk", "cli", "engine"], done.stdout
    config = found["config"]
    assert config.startswith("FAIL")
    assert f"{repo / 'pipeline.toml'}" in config
    assert "bogus" in config
    assert "; fix: " in config
    assert found["disk"].startswith("ok")
    assert found["sdk"].startswith("ok") and version("dagger-io") in found["sdk"]
    for name in ("cli", "engine"):
        assert found[name].startswith("FAIL"), done.stdout
        assert "scripts/engine up" in found[name], done.stdout
    assert done.stdout.splitlines()[-1] == "3 problems found"


def test_a_stopped_engine_and_an_unresolvable_base_are_named(tmp_path: Path):
    repo = copy_example(tmp_path / "repo")
    host = f"unix://{tmp_path}/nothing.sock"
    done = doctor(
        "--project-dir",
        str(repo),
        "--base-image",
        "localhost:9/nothing:1",
        env={"_EXPERIMENTAL_DAGGER_RUNNER_HOST": host, "PATH": str(tmp_path / "empty")},
    )
    assert done.returncode == 1
    found = findings(done.stdout)
    assert found["config"].startswith("ok")
    assert "7 services, 3 tiers" in found["config"]
    assert found["engine"].startswith("FAIL")
    assert f"{host} does not answer" in found["engine"]
    assert found["base image"].startswith("FAIL")
    assert "localhost:9/nothing:1 does not resolve; fix:" in found["base image"]


def test_a_cli_of_another_generation_is_named(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cli = bin_dir / "dagger"
    cli.write_text("#!/bin/sh\necho 'dagger v0.19.3 (image://registry) linux/amd64'\n")
    cli.chmod(0o755)
    done = doctor("--project-dir", str(copy_example(tmp_path / "repo")), env={"PATH": str(bin_dir)})
    line = findings(done.stdout)["cli"]
    assert line.startswith("FAIL"), done.stdout
    assert f"{cli} v0.19.3, not dagger-io {version('dagger-io')}'s generation" in line
    assert "; fix: install the CLI of dagger-io" in line


def test_a_registry_wanting_credentials_is_named_and_no_password_is_printed(
    tmp_path: Path, wants_credentials: str
):
    repo = str(copy_example(tmp_path / "repo"))
    target = f"{wants_credentials}/acme"
    missing = doctor("--project-dir", repo, "--registry", target, env={"PATH": ""})
    line = findings(missing.stdout)["registry"]
    assert line.startswith("FAIL"), missing.stdout
    assert "wants credentials" in line
    assert "PIPELINE_REGISTRY_USERNAME and PIPELINE_REGISTRY_PASSWORD not set" in line
    given = doctor(
        "--project-dir",
        repo,
        "--registry",
        target,
        env={
            "PATH": "",
            "PIPELINE_REGISTRY_USERNAME": "ci",
            "PIPELINE_REGISTRY_PASSWORD": PASSWORD,
        },
    )
    line = findings(given.stdout)["registry"]
    assert line.startswith("ok"), given.stdout
    assert "credentials given for ci" in line
    assert PASSWORD not in given.stdout + given.stderr


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_healthy_setup_is_all_ok_and_names_the_engine(
    tmp_path: Path, base_image: str, registry: str
):
    repo = copy_example(tmp_path / "repo")
    done = doctor(
        "--project-dir",
        str(repo),
        "--base-image",
        base_image,
        "--registry",
        registry,
        env={},
        keep_engine=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = findings(done.stdout)
    assert list(found) == ["config", "disk", "sdk", "cli", "engine", "base image", "registry"]
    assert all(line.startswith("ok") for line in found.values()), done.stdout
    engine = re.search(r"\bv(\d+\.\d+\.\d+)\b", found["engine"])
    assert engine, found["engine"]
    assert generation(engine[1]) == generation(version("dagger-io"))
    assert "@sha256:" in found["base image"]
    assert done.stdout.splitlines()[-1] == "everything a run needs is there"
