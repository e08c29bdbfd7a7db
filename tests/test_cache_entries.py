"""Result-cache entries prove themselves, without an engine: an entry that is damaged, edited,
copied under another key or of another format is ignored with a warning, and a stored result
is replayed only when it is this service's, names a real digest and passed every check."""

from __future__ import annotations

import json
import os
import tarfile
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs

from pipeline import session
from pipeline.core import jobs
from pipeline.core.outcomes import ImageFacts, Kind, Result, Status
from pipeline.core.settings import RunOptions
from pipeline.edges import carry, history
from pipeline.edges.resultcache import ResultCache, seal
from pipeline.session import build_settings
from tests.conftest import copy_example

if TYPE_CHECKING:
    from pathlib import Path

BASE = "localhost:5000/bookworm-python@sha256:" + "0" * 64
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def job_and_cache(tmp_path: Path) -> tuple[jobs.Job, ResultCache]:
    repo = copy_example(tmp_path / "repo", services=("worker",))
    project = session.load(repo)
    build = build_settings(project, "python:3.11-slim-bookworm", "tests")
    cache = ResultCache(repo, "tests")
    (job,) = jobs.plan(project, list(project.services.values()), build, BASE, cache)
    return job, cache


def _verified(job: jobs.Job) -> Result:
    facts = ImageFacts(DIGEST, 100, ("sha256:" + "cd" * 32,), (90,))
    checks = dict.fromkeys(jobs.expected_checks(job), True)
    return Result(job.service.name, job.service.tier, Status.OK, 1.0, facts, checks)


def _replay(job: jobs.Job, cache: ResultCache) -> tuple[Result | None, list[dict]]:
    with capture_logs() as logs:
        replayed = jobs.replay(job, cache, RunOptions())
    return replayed, logs


def test_a_verified_result_replays(job_and_cache: tuple[jobs.Job, ResultCache]):
    job, cache = job_and_cache
    jobs.record(job, _verified(job), cache, tested=True)
    replayed, logs = _replay(job, cache)
    assert replayed is not None
    assert replayed.cached
    assert replayed.image is not None
    assert replayed.image.digest == DIGEST
    assert not [e for e in logs if e["event"] == "cache_entry_ignored"]


def _entry(cache: ResultCache, job: jobs.Job) -> Path:
    return cache.dir / "results" / f"{job.key}.json"


@pytest.mark.parametrize(
    "damage",
    ["digest edited", "checks edited", "another key's entry", "format 1", "kind changed"],
)
def test_an_entry_that_does_not_prove_itself_is_ignored(
    job_and_cache: tuple[jobs.Job, ResultCache], damage: str
):
    job, cache = job_and_cache
    jobs.record(job, _verified(job), cache, tested=True)
    path = _entry(cache, job)
    entry = json.loads(path.read_text())
    if damage == "digest edited":
        entry["value"]["image"]["digest"] = "sha256:" + "0" * 61 + "bad"
    elif damage == "checks edited":
        entry["value"]["tests"]["smoke"] = False
    elif damage == "another key's entry":
        path = path.with_name("0" * 64 + ".json")
        job = replace(job, key="0" * 64)
    elif damage == "format 1":
        entry = {"format": 1, "value": entry["value"]}
    else:
        entry["kind"] = "checks"
    path.write_text(json.dumps(entry))
    replayed, logs = _replay(job, cache)
    assert replayed is None
    assert any(e["event"] == "cache_entry_ignored" for e in logs)


@pytest.mark.parametrize(
    "lie",
    ["a failed check", "a missing check", "not a digest", "another service", "failed status"],
)
def test_a_sealed_result_that_was_not_verified_never_replays(
    job_and_cache: tuple[jobs.Job, ResultCache], lie: str
):
    """A writer that reseals what it writes (a shared store's forger) still cannot make an
    unverified result replay."""
    job, cache = job_and_cache
    result = _verified(job)
    if lie == "a failed check":
        result = replace(result, tests={**result.tests, "smoke": False})
    elif lie == "a missing check":
        result = replace(result, tests={})
    elif lie == "not a digest":
        assert result.image is not None
        result = replace(result, image=replace(result.image, digest="sha256:000bad"))
    elif lie == "another service":
        result = replace(result, service="users")
    else:
        result = replace(result, status=Status.FAILED)
    value = result.as_dict()
    path = _entry(cache, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    sealed = {"format": 2, "kind": "results", "key": job.key, "value": value}
    path.write_text(json.dumps({**sealed, "digest": seal(Kind.RESULTS, job.key, value)}))
    assert cache.get(Kind.RESULTS, job.key) == value  # it proves itself ...
    replayed, _ = _replay(job, cache)
    assert replayed is None  # ... but is no verified result of this job


def test_an_export_carries_what_the_history_used_and_leaves_out_the_rest(
    job_and_cache: tuple[jobs.Job, ResultCache], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    job, cache = job_and_cache
    root, scope = cache.top.parent, "tests"
    jobs.record(job, _verified(job), cache, tested=True)
    stale = cache.dir / "results" / f"{'e' * 64}.json"
    stale.write_text((cache.dir / "results" / f"{job.key}.json").read_text())
    month_ago = time.time() - 30 * 86400
    for entry in cache.dir.rglob("*.json"):  # every entry last used a month ago
        os.utime(entry, (month_ago, month_ago))
    monkeypatch.setattr(history, "KEEP", 2)
    for at in (time.time() - 60, time.time()):  # the two runs the history keeps, this hour
        history.append(root, scope, history.Run(at, "a" * 40, "build", {}))
    assert jobs.replay(job, cache, RunOptions()) is not None  # used now: marked as used

    packed = tmp_path / "results.tar.gz"
    size, left_out = carry._pack_results(root, scope, packed)  # noqa: SLF001 - the export's packing
    with tarfile.open(packed) as tar:
        names = {m.name.removeprefix("./") for m in tar if m.isfile()}
    assert f"results/{job.key}.json" in names  # replayed by a run the history keeps
    assert f"results/{stale.name}" not in names and left_out == 2  # and its checks entry
    assert f"inputs/{job.service.name}.json" in names  # one per service: never left out
    assert history.NAME in names and size == packed.stat().st_size

    # carried: an import keeps each entry's time of use, so the next export judges it alike
    landed = carry._stage_results(carry.Export(tmp_path, scope, ()), cache.dir)  # noqa: SLF001
    used = (cache.dir / "results" / f"{job.key}.json").stat().st_mtime
    assert (landed / "results" / f"{job.key}.json").stat().st_mtime == pytest.approx(used, abs=1)

    monkeypatch.setattr(history, "KEEP", 3)  # a history not yet full: nothing is old
    assert carry._pack_results(root, scope, packed)[1] == 0  # noqa: SLF001
