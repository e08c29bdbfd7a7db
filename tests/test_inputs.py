"""The inputs model, without an engine: every kind of input change gives a new key for exactly
the images it can alter, and nothing else does."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pipeline import graph, inputs, jobs
from pipeline.resultcache import ResultCache
from pipeline.settings import build_settings
from tests.conftest import copy_example

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

BASE = "localhost:5000/bookworm-python@sha256:" + "0" * 64


def keys(repo: Path, base: str = BASE, **env: str) -> dict[str, str]:
    """Each service's content key (what checks depend on) for the repo as it is now."""
    project = graph.load(repo)
    build = build_settings(project, "python:3.11-slim-bookworm", "tests", environ=env)
    cache = ResultCache(repo, "tests", read=False, write=False)
    work = jobs.plan(project, list(project.services.values()), build, base, cache)
    return {job.service.name: job.content_key for job in work}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "repo", services=("users", "gateway", "inference", "reports"))


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


CHANGES: dict[str, tuple[Callable[[Path], None], set[str]]] = {
    "source file": (lambda r: _append(r / "services/users/users/app.py", "# x\n"), {"users"}),
    "new source file": (
        lambda r: (r / "services/users/users/extra.py").write_text("X = 1\n"),
        {"users"},
    ),
    "unit test file": (
        lambda r: _append(r / "services/gateway/tests/test_app.py", "# x\n"),
        {"gateway"},
    ),
    "service manifest": (
        lambda r: _append(r / "services/users/service.toml", 'env = { A = "1" }\n'),
        {"users"},
    ),
    "service requirements": (
        lambda r: _append(r / "services/gateway/requirements.txt", "# x\n"),
        {"gateway"},
    ),
    "service pyproject": (
        lambda r: _append(r / "services/reports/pyproject.toml", "# x\n"),
        {"reports"},
    ),
    "tier requirements": (
        lambda r: _append(r / "requirements/ai.txt", "# x\n"),
        {"inference"},
    ),
    "parent tier requirements": (
        lambda r: _append(r / "requirements/backend.txt", "# x\n"),
        {"users", "gateway", "inference", "reports"},
    ),
    "test requirements": (
        lambda r: _append(r / "requirements/test.txt", "# x\n"),
        {"users", "gateway", "inference", "reports"},
    ),
    "config value": (
        lambda r: (r / "pipeline.toml").write_text(
            (r / "pipeline.toml").read_text().replace("uid = 10001", "uid = 10002")
        ),
        {"users", "gateway", "inference", "reports"},
    ),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_an_input_change_misses_exactly_the_images_it_can_alter(repo: Path, change: str):
    apply, affected = CHANGES[change]
    before = keys(repo)
    apply(repo)
    after = keys(repo)
    assert {name for name in before if before[name] != after[name]} == affected


def test_base_image_digest_and_tool_versions_are_inputs(repo: Path, monkeypatch):
    before = keys(repo)
    assert set(keys(repo, base=BASE.replace("0" * 64, "1" * 64)).values()).isdisjoint(
        before.values()
    )
    monkeypatch.setattr(inputs, "UV_VERSION", "0.0.1")
    assert set(keys(repo).values()).isdisjoint(before.values())


def test_what_no_image_reads_changes_no_key(repo: Path):
    before = keys(repo)
    (repo / "README.md").write_text("notes\n")
    (repo / "services/users/users/__pycache__").mkdir()
    (repo / "services/users/users/__pycache__/app.cpython-311.pyc").write_bytes(b"x")
    # a secret is not an input: changing the index URL alone rebuilds nothing
    assert keys(repo, PIPELINE_INDEX_URL="https://u:p@example.com/simple") == before
    assert keys(repo) == before


def test_excluded_files_reach_neither_image_nor_unit_tests(repo: Path):
    manifest = repo / "services/users/service.toml"
    _append(manifest, 'exclude = ["secrets.env", "big/**"]\n')
    (repo / "services/users/secrets.env").write_text("TOKEN=1\n")
    (repo / "services/users/big").mkdir()
    (repo / "services/users/big/blob.bin").write_bytes(b"0" * 10)
    svc = graph.load(repo).services["users"]
    for listed in (inputs.source_files(svc, repo), inputs.test_files(svc, repo)):
        assert "secrets.env" not in listed
        assert not any(p.startswith("big/") for p in listed)
    assert "tests/test_app.py" in inputs.test_files(svc, repo)
    assert "tests/test_app.py" not in inputs.source_files(svc, repo)


def test_a_symlink_out_of_the_project_is_never_read(repo: Path, tmp_path: Path):
    outside = tmp_path / "outside.txt"
    outside.write_text("private\n")
    (repo / "services/users/users/leak.txt").symlink_to(outside)
    svc = graph.load(repo).services["users"]
    assert "users/leak.txt" not in inputs.source_files(svc, repo)


@pytest.mark.parametrize(
    ("text", "inline"),
    [
        ("fastapi==0.115.4\nuvicorn==0.32.0\n", True),
        ("--extra-index-url https://pypi.example.com/simple\nsix\n", True),
        ("--extra-index-url https://ci:tok123@pypi.example.com/simple\nsix\n", False),
        ("--index-url https://__token__@pypi.example.com/simple\n", False),
        ("private @ git+https://deploy:ghp_x@github.com/acme/private\n", False),
    ],
)
def test_requirement_files_with_credentials_are_never_put_in_a_query(
    tmp_path: Path, text: str, inline: bool
):
    from pipeline import images

    path = tmp_path / "requirements.txt"
    path.write_text(text)
    assert (images.query_text(path) == text) is inline


def test_a_file_that_is_not_utf8_is_uploaded(tmp_path: Path):
    from pipeline import images

    path = tmp_path / "requirements.txt"
    path.write_bytes(b"caf\xe9==1.0\n")
    assert images.query_text(path) is None
