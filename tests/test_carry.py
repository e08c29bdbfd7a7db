"""Caches carried between runs, against the real engine: a scope's uv cache and result cache
exported to a folder and imported into a fresh scope (by the fallback to the default
branch's scope) make a rebuild there download no package it had before."""

from __future__ import annotations

import json
import tarfile
import time
from typing import TYPE_CHECKING

import pytest
from dagger import dag

from pipeline.engine import images
from tests.conftest import copy_example, pipeline_in, run_pipeline

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]


def _change_tier_inputs(repo: Path) -> None:
    """Cache volumes are not part of BuildKit's keys: a changed requirement file makes the
    tier's installs really run again, on whatever the scope's uv cache holds."""
    req = repo / "requirements/base.txt"
    req.write_text(req.read_text() + f"# {time.time_ns()}\n")


async def _wheels(scope: str, base_image: str) -> list[str]:
    """What uv has downloaded into a scope's cache: one archive entry per wheel."""
    out = await (
        dag.container()
        .from_(base_image)
        .with_mounted_cache("/uv", images.cache(scope, "uv"))
        .with_env_variable("AT", str(time.time_ns()))
        .with_exec(["sh", "-c", "ls /uv/archive-v0 2>/dev/null | sort"])
        .stdout()
    )
    return out.split()


def _entries(folder: Path) -> dict[str, bytes]:
    """A result cache's files by path, with their bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


async def test_imported_caches_make_a_fresh_scope_download_nothing(tmp_path: Path, base_image: str):
    repo = copy_example(tmp_path / "repo", services=("worker",))
    first, fresh = f"carry-a-{time.time_ns()}", f"carry-b-{time.time_ns()}"
    _change_tier_inputs(repo)
    built = pipeline_in(repo, base_image, "build", "--no-test", scope=first)
    assert built.returncode == 0, built.stderr
    carried = tmp_path / "carried"
    where = ["--project-dir", str(repo), "--base-image", base_image]
    done = run_pipeline("cache", "export", str(carried), *where, "--cache-scope", first)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((carried / first / "manifest.json").read_text())
    assert manifest["left_out"] == []
    downloaded = await _wheels(first, base_image)
    assert downloaded  # the first build filled its scope's uv cache
    packed = carried / first / "uv.tar.gz"
    assert manifest["sizes"]["uv"] == packed.stat().st_size
    with tarfile.open(packed) as tar:
        held = {m.name.removeprefix("./") for m in tar}
    assert {f"archive-v0/{wheel}" for wheel in downloaded} <= held  # every wheel uv unpacked

    # a fresh scope: empty volumes; its own export is missing, so the fallback scope's is used
    assert await _wheels(fresh, base_image) == []
    done = run_pipeline(
        "cache", "import", str(carried), *where, "--cache-scope", fresh, "--fallback-scope", first
    )
    assert done.returncode == 0, done.stderr
    assert "cache_imported" in done.stderr
    imported = await _wheels(fresh, base_image)
    assert imported == downloaded
    # the result cache too: every entry the first scope had, byte for byte
    exported, landed = (_entries(repo / ".pipeline/cache" / s) for s in (first, fresh))
    assert any(name.startswith("results/") for name in exported)
    assert landed == exported

    _change_tier_inputs(repo)  # the installs run again, now in the fresh scope
    rebuilt = pipeline_in(repo, base_image, "build", "--no-test", "--no-cache", scope=fresh)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert await _wheels(fresh, base_image) == imported  # no package downloaded again


def test_a_bounded_export_leaves_out_what_is_cheapest_to_refill(tmp_path: Path, base_image: str):
    repo = copy_example(tmp_path / "repo", services=("worker",))
    carried = tmp_path / "carried"
    scope = f"carry-c-{time.time_ns()}"
    where = ["--project-dir", str(repo), "--base-image", base_image, "--cache-scope", scope]
    done = run_pipeline("cache", "export", str(carried), *where, "--max-size-mb", "0")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((carried / scope / "manifest.json").read_text())
    assert manifest["left_out"] == ["apt-lists", "apt-cache", "pip", "uv"]
    assert sorted(p.name for p in (carried / scope).iterdir()) == [
        "manifest.json",
        "results.tar.gz",
    ]
    nothing = run_pipeline("cache", "import", str(tmp_path / "none"), *where)
    assert nothing.returncode == 2
    assert "is not a folder" in nothing.stderr
