"""The engine pool on this machine (scripts/engine pool up): every engine PIPELINE_TEST_ENGINES
names answers at its URL, as a run that spreads its services over the pool reaches it."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.conftest import pool_engine_container, pool_script, start_engine, stop_engine

if TYPE_CHECKING:
    from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# how each generation's CLI names the engine it reached (v0.21: "connected name=<host>",
# v0.11: "Connected to engine <host> (version ...)"): the engine container's hostname
CONNECTED = re.compile(r"(?:connected name=|Connected to engine )(\S+)")


def dagger_cli() -> str:
    cli = os.environ.get("_EXPERIMENTAL_DAGGER_CLI_BIN") or shutil.which("dagger")
    assert cli, 'no Dagger CLI: eval "$(scripts/engine env)"'
    return cli


def query_version(url: str, cwd: Path) -> tuple[str, str]:
    """The version the engine at ``url`` answers with and the name the CLI gives that engine.
    (The CLI waits minutes for an engine that is not there: ask only one that accepts.)"""
    done = subprocess.run(
        [dagger_cli(), "query", "--progress", "plain"],
        input="{ version }",
        capture_output=True,
        text=True,
        cwd=cwd,  # no dagger.json: a bare query, not a module's
        env={**os.environ, "_EXPERIMENTAL_DAGGER_RUNNER_HOST": url},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{url} did not answer: {done.stderr[-2000:]}"
    version = re.search(r'"version": "([^"]+)"', done.stdout)
    assert version, f"{url}: no version in {done.stdout!r}"
    engine = CONNECTED.search(ANSI.sub("", done.stderr))
    assert engine, f"{url}: the CLI named no engine it connected to: {done.stderr}"
    return version[1], engine[1]


def accepts(url: str) -> bool:
    """Whether anything accepts a connection at a unix:// or tcp:// runner URL."""
    parts = urlsplit(url)
    try:
        if parts.scheme == "unix":
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(parts.path)
        else:
            socket.create_connection((parts.hostname, parts.port), timeout=5).close()
    except OSError:
        return False
    return True


@pytest.mark.engine
def test_every_pool_engine_answers(engine_pool: list[tuple[str, str]], tmp_path: Path):
    """Each engine of the pool answers a query at its runner URL (unix:// or tcp://) with the
    version of the SDK's generation, and each URL reaches an engine of its own."""
    assert len(engine_pool) >= 2, f"a pool is the main engine and more: {engine_pool}"
    version = "v" + importlib.metadata.version("dagger-io")
    reached: dict[str, str] = {}
    for name, url in engine_pool:
        answered, reached[name] = query_version(url, tmp_path)
        assert answered == version, f"{name} ({url})"
    assert len(set(reached.values())) == len(engine_pool), f"engines reached: {reached}"


@pytest.mark.engine
def test_a_stopped_pool_engine_is_gone_until_started(
    engine_pool: list[tuple[str, str]], tmp_path: Path
):
    """stop_engine takes a pool engine away at once (nothing accepts at its URL, as after a
    crash) and start_engine brings the same engine back, answering at the same URL."""
    assert len(engine_pool) >= 2, f"a pool is the main engine and more: {engine_pool}"
    name, url = engine_pool[-1]  # an extra engine, never the main one
    _, before = query_version(url, tmp_path)
    stop_engine(name)
    try:
        assert not accepts(url), f"{name} ({url}) still accepts connections after stop_engine"
    finally:
        start_engine(name)
    _, after = query_version(url, tmp_path)
    assert after == before, f"{name} came back as another engine"


# Writes VALUE into the cache volume VOLUME at /keep and prints it; with VALUE empty, prints what
# the volume holds ("none" when nothing). NONCE keeps the engine from answering from its cache.
KEEP = """
import os, sys, anyio, dagger
from dagger import dag

async def main(volume, value, nonce):
    async with dagger.connection(dagger.Config(log_output=None)):
        script = f"echo {value} > /keep/value; cat /keep/value" if value else (
            "cat /keep/value 2>/dev/null || echo none")
        ctr = (dag.container().from_(os.environ["PIPELINE_BASE_IMAGE"])
               .with_mounted_cache("/keep", dag.cache_volume(volume))
               .with_env_variable("NONCE", nonce)
               .with_exec(["sh", "-c", script]))
        print((await ctr.stdout()).strip())

anyio.run(main, *sys.argv[1:])
"""


def in_volume(url: str, volume: str, value: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-c", KEEP, volume, value, uuid.uuid4().hex],
        capture_output=True,
        text=True,
        env={**os.environ, "_EXPERIMENTAL_DAGGER_RUNNER_HOST": url},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{url}: {done.stderr[-2000:]}"
    return done.stdout.strip()


@pytest.mark.engine
def test_an_engine_taken_down_and_brought_up_keeps_its_cache(engine_pool: list[tuple[str, str]]):
    """`scripts/engine pool down` then `pool up` (as `down` then `up`) keep what an engine
    cached: its container is stopped, given the time to close its cache, never killed, since
    v0.13 and later wipe a cache their engine did not close when they start again."""
    assert len(engine_pool) >= 2, f"a pool is the main engine and more: {engine_pool}"
    name, url = engine_pool[-1]  # an extra engine, never the main one
    _, version = pool_engine_container(name)
    volume, value = f"keep-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    assert in_volume(url, volume, value) == value
    pool_script(version, "down")
    pool_script(version, "up", str(len(engine_pool) - 1))
    assert in_volume(url, volume) == value
