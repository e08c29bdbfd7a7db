from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from pipeline import session
from pipeline.core import globs, jobs
from pipeline.core.stamp import Stamp, cache_scope_for, public_url
from pipeline.edges.git import read_provenance
from pipeline.edges.resultcache import ResultCache
from pipeline.session import build_settings
from pipeline.supply.release import immutable_tags, moving_tags
from tests.conftest import copy_example, git

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("**", "a/b/c.py", True),
        ("users/**", "users/app.py", True),
        ("users/**", "tests/test_app.py", False),
        ("**/__pycache__", "users/__pycache__/x.pyc", True),
        ("*.py", "a/b.py", False),
        ("*.py", "b.py", True),
        ("tests", "tests/test_x.py", True),
        ("data/?.csv", "data/a.csv", True),
    ],
)
def test_globs(pattern: str, path: str, hit: bool):
    assert globs.matches(globs.compile_all([pattern]), path) is hit


def test_cache_scope_from_branch():
    assert cache_scope_for("feature/login form") == "feature-login-form"
    assert cache_scope_for("main") == "main"
    assert cache_scope_for("///") == "default"


def _stamps(repo: Path) -> dict[str, Stamp]:
    """Each service's stamp, through the same inputs model the builders use."""
    project = session.load(repo)
    build = build_settings(project, "base:1", "tests")
    cache = ResultCache(repo, "tests", read=False, write=False)
    work = jobs.plan(project, list(project.services.values()), build, "base@sha256:0", cache)
    return {job.service.name: job.stamp for job in work}


def test_provenance_from_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    repo = copy_example(tmp_path / "repo", services=("users", "worker", "inference"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    prov = read_provenance(repo)
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    assert prov.revision == head.stdout.strip()
    assert prov.branch == "main"
    assert prov.created == "2026-01-02T03:04:05Z"  # the commit time, not now
    assert prov.source_url == "https://example.com/acme/monorepo"
    assert not any(s.dirty for s in _stamps(repo).values())
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert read_provenance(repo).created == "1970-01-01T00:00:00Z"


def test_dirty_means_any_input_of_the_image_changed(tmp_path: Path):
    repo = copy_example(tmp_path / "repo", services=("users", "worker", "inference"))
    (repo / "services/users/users/app.py").write_text("# edited\n")
    stamps = _stamps(repo)
    assert stamps["users"].dirty
    assert stamps["users"].version.endswith("-dirty")
    assert not stamps["worker"].dirty
    git(repo, "checkout", "--", ".")
    # a tier's requirements lie outside every service folder, yet are inputs of its images
    (repo / "requirements/ai.txt").write_text("numpy==2.1.3\n")
    stamps = _stamps(repo)
    assert stamps["inference"].dirty
    assert not stamps["users"].dirty
    git(repo, "checkout", "--", ".")
    (repo / "pipeline.toml").write_text((repo / "pipeline.toml").read_text() + "# note\n")
    assert all(s.dirty for s in _stamps(repo).values())
    git(repo, "checkout", "--", ".")
    # a file no image reads (the unit tests are inputs: they decide whether it is built)
    (repo / "services/users/NOTES.txt").write_text("x\n")
    stamps = _stamps(repo)
    assert not stamps["worker"].dirty
    assert stamps["users"].dirty  # it reaches the unit-test upload


def tags_for(stamp: Stamp) -> list[str]:
    """Every tag an image is published under: immutable ones first."""
    return [*immutable_tags(stamp), *moving_tags(stamp)]


def test_tag_strategy():
    rev = "0123456789abcdef" * 2 + "01234567"
    clean = Stamp("users", "backend", rev, "main", "", "", dirty=False)
    assert tags_for(clean) == ["0123456789ab", "branch-main", "latest"]
    feature = replace(clean, branch="feature/x")
    assert tags_for(feature) == ["0123456789ab", "branch-feature-x"]
    dirty = replace(clean, dirty=True)
    assert tags_for(dirty) == ["0123456789ab-dirty"]  # moves no shared tag

    versioned = replace(clean, release="1.4.2")
    assert immutable_tags(versioned) == ["0123456789ab", "1.4.2"]
    assert moving_tags(versioned) == ["branch-main", "latest"]
    assert tags_for(replace(versioned, dirty=True)) == ["0123456789ab-dirty"]
    outside_git = replace(versioned, revision="unknown")
    assert tags_for(outside_git) == ["1.4.2"]  # no commit: nothing moves


REMOTES = {
    "ssh://user:PASSWORD@host.example/acme/repo.git": "https://host.example/acme/repo",
    "ssh://git@host.example:2222/acme/repo.git": "https://host.example/acme/repo",
    "git://host.example/acme/repo.git": "https://host.example/acme/repo",
    "user:PASSWORD@host.example:acme/repo.git": "https://host.example/acme/repo",
    "git@github.com:acme/repo.git": "https://github.com/acme/repo",
    "https://x-token:PASSWORD@github.com/acme/repo.git?token=PASSWORD#f": (
        "https://github.com/acme/repo"
    ),
    "http://user@localhost:8080/acme/repo/": "http://localhost:8080/acme/repo",
    "/srv/git/repo.git": "",
    "../repo": "",
    "file:///srv/git/repo.git": "",
}


@pytest.mark.parametrize("remote", list(REMOTES))
def test_source_url_has_no_credentials_and_no_local_path(tmp_path: Path, remote: str):
    assert public_url(remote) == REMOTES[remote]
    repo = copy_example(tmp_path / "repo", services=("worker",))
    git(repo, "remote", "set-url", "origin", remote)
    stamp = _stamps(repo)["worker"]
    assert "PASSWORD" not in stamp.build_info() + json.dumps(stamp.labels())
    assert stamp.labels().get("org.opencontainers.image.source") == (REMOTES[remote] or None)


def test_outside_git_the_image_is_as_old_as_its_newest_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    repo = copy_example(tmp_path / "repo", services=("worker",))
    shutil.rmtree(repo / ".git")
    app = repo / "services/worker/worker/__main__.py"
    os.utime(app, (1_767_225_600, 1_767_225_600))  # 2026-01-01
    for path in repo.rglob("*"):
        if path != app:
            os.utime(path, (1_700_000_000, 1_700_000_000))
    stamp = _stamps(repo)["worker"]
    assert stamp.revision == "unknown"
    assert stamp.created == "2026-01-01T00:00:00Z"
    assert "org.opencontainers.image.source" not in stamp.labels()


def _commit(repo: Path, message: str, when: str = "2026-02-03T04:05:06Z") -> str:
    """Everything in the work tree committed at ``when``; the new commit."""
    git(repo, "add", "-A")
    env = {**os.environ, "GIT_COMMITTER_DATE": when, "GIT_AUTHOR_DATE": when}
    user = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "-C", str(repo), *user, "commit", "-qm", message], check=True, env=env)
    return git(repo, "rev-parse", "HEAD")


def test_an_image_names_the_last_commit_that_changed_its_inputs(tmp_path: Path):
    """A commit that changes users leaves worker's stamp, its key and its build-info as they
    were; users names that commit, and a run at that commit tags both images with it."""
    repo = copy_example(tmp_path / "repo", services=("users", "worker"))
    first = git(repo, "rev-parse", "HEAD")
    before = {job.service.name: job for job in _plan(repo)}
    (repo / "services/users/users/app.py").write_text("# edited\n")
    edit = _commit(repo, "users")
    after = {job.service.name: job for job in _plan(repo)}
    assert after["worker"].stamp.revision == first
    assert after["worker"].key == before["worker"].key
    assert after["worker"].stamp.build_info() == before["worker"].stamp.build_info()
    assert after["users"].stamp.revision == edit
    assert after["users"].stamp.created == "2026-02-03T04:05:06Z"  # that commit's time
    assert after["users"].key != before["users"].key
    # the run's commit names every image of the run, as a tag only
    assert immutable_tags(after["worker"].stamp) == [first[:12], edit[:12]]
    assert immutable_tags(after["users"].stamp) == [edit[:12]]
    assert "branch" not in json.loads(after["worker"].stamp.build_info())
    # a commit of files no image reads changes no image
    (repo / "NOTES.md").write_text("notes\n")
    _commit(repo, "notes")
    assert {j.service.name: j.key for j in _plan(repo)} == {
        name: job.key for name, job in after.items()
    }
    # the config is what every service's settings are read from
    (repo / "pipeline.toml").write_text((repo / "pipeline.toml").read_text() + "# note\n")
    config = _commit(repo, "config")
    assert {j.stamp.revision for j in _plan(repo)} == {config}


def test_a_deleted_input_and_a_merged_branch_are_changes(tmp_path: Path):
    repo = copy_example(tmp_path / "repo", services=("users", "worker"))
    (repo / "services/users/users/extra.py").write_text("X = 1\n")
    git(repo, "add", "-A")
    _commit(repo, "extra")
    git(repo, "rm", "-q", "services/users/users/extra.py")
    deleted = _commit(repo, "no extra")
    stamps = {j.service.name: j.stamp for j in _plan(repo)}
    assert stamps["users"].revision == deleted  # no path of it now, yet it changed users

    # worker changes on a branch; users changes on main after it forked; the merge brings
    # worker's change, so worker names the merge (its tree holds worker as HEAD does)
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "services/worker/worker/__init__.py").write_text("# feature\n")
    _commit(repo, "worker on a branch")
    git(repo, "checkout", "-q", "main")
    (repo / "services/users/users/app.py").write_text("# main\n")
    on_main = _commit(repo, "users on main", "2026-03-01T00:00:00Z")
    git(
        repo,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@e",
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "m",
        "feature",
    )
    merge = git(repo, "rev-parse", "HEAD")
    stamps = {j.service.name: j.stamp for j in _plan(repo)}
    assert stamps["worker"].revision == merge
    assert stamps["users"].revision == on_main


def test_a_shallow_clone_names_its_oldest_commit(tmp_path: Path):
    """A clone without history knows no older change: its one commit stands for all."""
    repo = copy_example(tmp_path / "repo", services=("users", "worker"))
    (repo / "services/users/users/app.py").write_text("# edited\n")
    _commit(repo, "users")
    (repo / "NOTES.md").write_text("notes\n")
    head = _commit(repo, "notes")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(clone)], check=True)
    assert {j.stamp.revision for j in _plan(clone)} == {head}
    assert read_provenance(clone).shallow
    assert not read_provenance(repo).shallow
    full = {j.service.name: j.stamp.revision for j in _plan(repo)}
    assert full["users"] != head


def _plan(repo: Path) -> list[jobs.Job]:
    project = session.load(repo)
    build = build_settings(project, "base:1", "tests")
    cache = ResultCache(repo, "tests", read=False, write=False)
    return jobs.plan(project, list(project.services.values()), build, "base@sha256:0", cache)
