"""Shared fixtures. Engine tests share one Dagger connection for the whole session; they skip
only outside CI when no engine is reachable, and fail under CI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.outcomes import ImageFacts

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_FILES = ("pipeline.toml", "requirements", "services")


def engine_configured() -> bool:
    return bool(
        os.environ.get("DAGGER_SESSION_PORT")
        or os.environ.get("_EXPERIMENTAL_DAGGER_RUNNER_HOST")
        or shutil.which("dagger")
    )


def value_of(output: str, key: str) -> str:
    """``key=value`` from a command's output. The engine's CA-certificate hook writes lines of
    its own around a command's stdout, so tests look for marked values, never line positions."""
    found = re.findall(rf"^{re.escape(key)}=(.*)$", output, flags=re.MULTILINE)
    assert found, f"no {key}= in output: {output!r}"
    return found[-1].strip()


def run_pipeline(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline ARGS`` as a user runs it, with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
        env={**os.environ, **(env or {})},
    )


def pipeline_in(
    repo: Path,
    base_image: str,
    *args: str,
    scope: str = "tests",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The CLI against a copy of the example, on the test base image and cache scope."""
    where = ["--project-dir", str(repo), "--base-image", base_image, "--cache-scope", scope]
    return run_pipeline(*args, *where, env=env)


def skopeo(*args: str) -> Any:
    """What ``skopeo ARGS`` prints, parsed as JSON."""
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def copy_example(dest: Path, services: tuple[str, ...] = ()) -> Path:
    """The example monorepo (optionally only some services) as a fresh git repository."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in EXAMPLE_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)
    if services:
        for folder in (dest / "services").iterdir():
            if folder.name not in services:
                shutil.rmtree(folder)
    return commit_all(dest)


def copy_workspace(dest: Path) -> Path:
    """The uv-workspace example monorepo (examples/uv-workspace) as a fresh git repository."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pipeline", ".venv")
    shutil.copytree(ROOT / "examples" / "uv-workspace", dest, ignore=ignore)
    return commit_all(dest)


def commit_all(dest: Path) -> Path:
    """``dest`` made a git repository with everything in it committed, at a fixed time."""
    git(dest, "init", "-q", "-b", "main")
    git(dest, "remote", "add", "origin", "git@example.com:acme/monorepo.git")
    git(dest, "add", "-A")
    env = {"GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z", "GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z"}
    subprocess.run(
        [
            "git",
            "-C",
            str(dest),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-qm",
            "example",
        ],
        check=True,
        env={**os.environ, **env},
    )
    return dest


def tiny_repo(dest: Path, smoke: dict[str, str]) -> Path:
    """A committed monorepo of small base-tier services; ``smoke`` maps each to the Python
    code of its smoke test (raise to fail it)."""
    repo = copy_example(dest, services=("-",))
    for name, code in smoke.items():
        folder = repo / "services" / name
        folder.mkdir(parents=True)
        (folder / "service.toml").write_text(
            'tier = "base"\ncommand = ["python", "-c", "import time; time.sleep(60)"]\n'
            f"smoke = {json.dumps(['python', '-c', code])}\n"
        )
        (folder / "main.py").write_text(f"NAME = {name!r}\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "services")
    return repo


# What a CI provider's runner sets that the pipeline reads (the commit, branch, repository and
# workflow in provenance and attestations, the step summary), and the build time it honours.
RUNNER_ENV_PREFIXES = ("GITHUB_", "RUNNER_")
RUNNER_ENV = ("SOURCE_DATE_EPOCH",)


@pytest.fixture(autouse=True)
def _no_runner_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no runner's values: on GitHub Actions, "outside git" and stamp tests would
    read GITHUB_SHA, GITHUB_HEAD_REF... of the run itself. A test that wants them sets them."""
    for name in list(os.environ):
        if name.startswith(RUNNER_ENV_PREFIXES) or name in RUNNER_ENV:
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
async def engine():
    """One engine connection for every engine test."""
    if not engine_configured():
        if os.environ.get("CI"):
            pytest.fail("CI=true but no Dagger engine is configured: run scripts/engine up first")
        pytest.skip('no Dagger engine configured (scripts/engine up; eval "$(scripts/engine env)")')
    import dagger

    async with dagger.connection(dagger.Config(log_output=None)) as client:
        yield client


@pytest.fixture(scope="session")
def registry() -> str:
    """The loopback registry (host[:port]/namespace) engine tests publish to."""
    address = os.environ.get("PIPELINE_REGISTRY")
    if not address:
        if os.environ.get("CI"):
            pytest.fail('CI=true but PIPELINE_REGISTRY is unset: eval "$(scripts/engine env)"')
        pytest.skip("no registry to publish to (PIPELINE_REGISTRY)")
    return address


@pytest.fixture(scope="session")
def base_image() -> str:
    return os.environ.get("PIPELINE_BASE_IMAGE", "python:3.11-slim-bookworm")


# The engines of a pool on this machine (scripts/engine pool up) as `scripts/engine pool env`
# lists them: NAME=URL,... Tests read them from PIPELINE_TEST_ENGINES, never PIPELINE_ENGINES,
# so that no other test's run spreads over the pool.
POOL_ENV = "PIPELINE_TEST_ENGINES"
POOL_LABEL = "pipeline.engine.url"  # scripts/engine's label on a pool engine's container
RUNNER_SOCKET_DIR = re.compile(r"^unix:///run/([^/]+)/buildkitd\.sock$")


def pool_entries() -> list[tuple[str, str]]:
    """(name, runner URL) of each engine PIPELINE_TEST_ENGINES lists, in its order."""
    entries: list[tuple[str, str]] = []
    for item in os.environ.get(POOL_ENV, "").split(","):
        name, sep, url = item.strip().partition("=")
        if not (sep and name and "://" in url):
            pytest.fail(
                f"{POOL_ENV}: {item!r} is not NAME=URL (e.g. pool1=tcp://127.0.0.1:12341); "
                "give what `scripts/engine pool env` prints as PIPELINE_ENGINES"
            )
        entries.append((name, url))
    return entries


@pytest.fixture(scope="session")
def engine_pool() -> list[tuple[str, str]]:
    """The pool's engines as (name, runner URL) pairs: the main engine first, then the others."""
    if not os.environ.get(POOL_ENV):
        if os.environ.get("CI"):
            pytest.fail(
                f"CI=true but {POOL_ENV} is unset: run `scripts/engine pool up`, then set "
                f"{POOL_ENV} to the PIPELINE_ENGINES value `scripts/engine pool env` prints"
            )
        pytest.skip(f"no engine pool ({POOL_ENV}; scripts/engine pool up, pool env)")
    return pool_entries()


def pool_engine_container(name: str) -> tuple[str, str]:
    """The container of the pool's engine ``name`` and the Dagger version it runs."""
    url = dict(pool_entries()).get(name)
    assert url, f"{POOL_ENV} names no engine {name!r}"
    found = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label={POOL_LABEL}={url}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    socket_dir = RUNNER_SOCKET_DIR.match(url)
    container = found[0] if found else socket_dir[1] if socket_dir else ""
    assert container, f"no engine container answers to {url} ({name})"
    version = subprocess.run(
        ["docker", "inspect", "-f", '{{index .Config.Labels "org.opencontainers.image.version"}}',
         container],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    return container, version


def pool_script(version: str, *args: str) -> None:
    """``scripts/engine pool ARGS`` for the engines of ``version``. Never with a state limit:
    a `pool up` in a test must not empty the main engine's state under the running suite."""
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_ENGINE_STATE_MAX"}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/engine"), "pool", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**env, "PIPELINE_DAGGER_VERSION": version},
    )
    assert done.returncode == 0, f"scripts/engine pool {' '.join(args)}: {done.stderr}"


def pool_engine_command(action: str, name: str) -> None:
    container, version = pool_engine_container(name)
    pool_script(version, action, container)


def stop_engine(name: str) -> None:
    """Kill the pool's engine ``name`` at once, as an engine lost mid-run goes; it stays down
    until :func:`start_engine`."""
    pool_engine_command("stop", name)


def start_engine(name: str) -> None:
    """Start the pool's engine ``name`` again; returns once it answers a query."""
    pool_engine_command("start", name)


def tarball_facts(path: Path) -> ImageFacts:
    """What an exported OCI tarball says of its image (digest, size, layers), read here with
    no code of the pipeline's: the tests' own reader, to check the pipeline's against."""
    with tarfile.open(path) as tar:

        def blob(digest: str) -> dict[str, Any]:
            member = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            if member is None:
                raise ValueError(f"{path}: blob {digest} missing")
            return json.loads(member.read())  # type: ignore[no-any-return]

        index_file = tar.extractfile("index.json")
        if index_file is None:
            raise ValueError(f"{path}: no index.json, not an OCI image layout")
        desc = json.loads(index_file.read())["manifests"][0]
        manifest = blob(desc["digest"])
        while "manifests" in manifest:  # an index: follow to the first image manifest
            desc = manifest["manifests"][0]
            manifest = blob(desc["digest"])
    layers = tuple(layer["digest"] for layer in manifest["layers"])
    sizes = tuple(int(layer["size"]) for layer in manifest["layers"])
    return ImageFacts(desc["digest"], manifest["config"]["size"] + sum(sizes), layers, sizes)
