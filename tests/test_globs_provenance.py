from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import pytest

from pipeline import globs
from pipeline.meta import cache_scope_for, read_provenance
from tests.conftest import copy_example

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


def test_provenance_from_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    repo = copy_example(tmp_path / "repo", services=("users", "worker"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    prov = read_provenance(repo)
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    assert prov.revision == head.stdout.strip()
    assert prov.branch == "main"
    assert prov.created == "2026-01-02T03:04:05Z"  # the commit time, not now
    assert prov.source_url == "https://example.com/acme/monorepo"
    assert not prov.dirty("services/users")
    (repo / "services/users/users/app.py").write_text("# edited\n")
    prov = read_provenance(repo)
    assert prov.dirty("services/users")
    assert not prov.dirty("services/worker")
    assert prov.version("services/users").endswith("-dirty")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert read_provenance(repo).created == "1970-01-01T00:00:00Z"


def test_tag_strategy(tmp_path: Path):
    from pipeline.meta import Provenance, tags_for

    prov = Provenance("0123456789abcdef" * 2 + "01234567", "main", 0, "")
    assert tags_for(prov, "services/users") == ["0123456789ab", "branch-main", "latest"]
    feature = Provenance(prov.revision, "feature/x", 0, "")
    assert tags_for(feature, "services/users") == ["0123456789ab", "branch-feature-x"]
    dirty = Provenance(prov.revision, "main", 0, "", frozenset({"services/users/users/app.py"}))
    assert tags_for(dirty, "services/users") == ["0123456789ab-dirty"]  # moves no shared tag
    assert tags_for(dirty, "services/worker") == ["0123456789ab", "branch-main", "latest"]
