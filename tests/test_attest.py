"""The provenance statement without an engine: what it names of the source, never a path of
the machine that built it."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING

from pipeline import session
from pipeline.core import jobs
from pipeline.edges.resultcache import ResultCache
from pipeline.session import build_settings
from pipeline.supply import attest
from tests.conftest import copy_example, git

if TYPE_CHECKING:
    from pathlib import Path


def _statement(repo: Path) -> tuple[dict[str, object], jobs.Job]:
    project = session.load(repo)
    build = build_settings(project, "base:1", "tests")
    cache = ResultCache(repo, "tests", read=False, write=False)
    services = [project.services["worker"]]
    (job,) = jobs.plan(project, services, build, "base@sha256:" + "1" * 64, cache)
    digest = "sha256:" + "2" * 64
    return attest.statement(project, job, "worker", digest, 0.0, 1.0), job


def test_a_local_path_remote_gives_no_source_anywhere(tmp_path: Path):
    upstream = copy_example(tmp_path / "upstream", services=("worker",))
    clone = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(upstream), str(clone)], check=True)
    assert git(clone, "remote", "get-url", "origin") == str(upstream)
    statement, job = _statement(clone)
    text = json.dumps(statement)
    for local in (str(clone), str(upstream), str(tmp_path), "file:"):
        assert local not in text.replace("file:requirements/", "")
    stamp = job.stamp
    assert "org.opencontainers.image.source" not in stamp.labels()
    assert str(tmp_path) not in stamp.build_info()
    # the commit is still recorded, by digest
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]  # type: ignore[index]
    commit = [d for d in deps if "gitCommit" in d["digest"]]
    assert commit == [{"name": "source", "digest": {"gitCommit": git(clone, "rev-parse", "HEAD")}}]


def test_a_public_remote_is_the_source(tmp_path: Path):
    repo = copy_example(tmp_path / "repo", services=("worker",))  # origin: git@example.com:...
    statement, _ = _statement(repo)
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]  # type: ignore[index]
    (commit,) = [d for d in deps if "gitCommit" in d["digest"]]
    assert commit["uri"] == "git+https://example.com/acme/monorepo"
    assert str(tmp_path) not in json.dumps(statement)
