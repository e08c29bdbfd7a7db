"""The inputs model, without an engine: every kind of input change gives a new key for exactly
the images it can alter, and nothing else does."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import pytest

from pipeline import session
from pipeline.core import inputs, jobs
from pipeline.core.errors import ConfigError
from pipeline.edges.resultcache import ResultCache
from pipeline.session import build_settings
from tests.conftest import copy_example, git

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

BASE = "localhost:5000/bookworm-python@sha256:" + "0" * 64


def keys(repo: Path, base: str = BASE, **env: str) -> dict[str, str]:
    """Each service's content key (what checks depend on) for the repo as it is now."""
    project = session.load(repo)
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
    svc = session.load(repo).services["users"]
    for listed in (inputs.source_files(svc, repo), inputs.test_files(svc, repo)):
        assert "secrets.env" not in listed
        assert not any(p.startswith("big/") for p in listed)
    assert "tests/test_app.py" in inputs.test_files(svc, repo)
    assert "tests/test_app.py" not in inputs.source_files(svc, repo)


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("outside", "outside"),  # out of the project
        ("project", "outside"),  # elsewhere in the project
        ("absolute", "does not carry"),  # inside, but by an absolute path: dangles in /app
        ("dangling", "does not carry"),
        ("excluded", "does not carry"),  # a file the upload leaves out
    ],
)
def test_a_symlink_the_image_cannot_carry_is_a_config_error(
    repo: Path, tmp_path: Path, target: str, why: str
):
    users = repo / "services/users"
    _append(users / "service.toml", 'exclude = ["secret.txt"]\n')
    (users / "secret.txt").write_text("x\n")
    (tmp_path / "outside.txt").write_text("private\n")
    to = {
        "outside": str(tmp_path / "outside.txt"),
        "project": "../../../pipeline.toml",
        "absolute": str(users / "users/app.py"),
        "dangling": "nothing-here.py",
        "excluded": "../secret.txt",
    }[target]
    (users / "users/leak.py").symlink_to(to)
    with pytest.raises(ConfigError) as info:
        session.load(repo)
    message = str(info.value)
    assert "service.toml: include:" in message
    assert "users/leak.py is a symlink" in message
    assert why in message
    assert "fix:" in message


def test_a_symlink_to_a_carried_file_is_carried_and_its_target_is_an_input(repo: Path):
    users = repo / "services/users/users"
    (users / "a.py").write_text("A = 1\n")
    (users / "b.py").write_text("A = 1\n")  # the same bytes
    (users / "alias.py").symlink_to("a.py")
    svc = session.load(repo).services["users"]
    assert "users/alias.py" in inputs.source_files(svc, repo)
    before = keys(repo)
    (users / "alias.py").unlink()
    (users / "alias.py").symlink_to("b.py")  # retargeted to a file of equal bytes
    assert keys(repo)["users"] != before["users"]


@pytest.mark.parametrize("mode", [0o600, 0o755, 0o640, 0o644 | 0o4000])
def test_a_file_mode_is_an_input(repo: Path, mode: int):
    app = repo / "services/users/users/app.py"
    before = keys(repo)
    app.chmod(mode)
    after = keys(repo)
    assert {n for n in before if before[n] != after[n]} == {"users"}


def test_a_folder_mode_is_an_input(repo: Path):
    before = keys(repo)
    (repo / "services/users/users").chmod(0o700)
    after = keys(repo)
    assert {n for n in before if before[n] != after[n]} == {"users"}


def test_a_file_becoming_a_link_or_a_folder_is_a_change(repo: Path):
    users = repo / "services/users/users"
    (users / "data").write_text("x")
    before = keys(repo)["users"]
    (users / "data").unlink()
    (users / "data").mkdir()
    (users / "data/inner").write_text("x")
    assert keys(repo)["users"] != before


def test_what_git_ignores_is_never_uploaded_unless_named(repo: Path):
    users = repo / "services/users"
    (repo / ".gitignore").write_text("*.env\nbuild/\n")
    git(repo, "add", ".gitignore")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "ignore")
    before = keys(repo)
    (users / "users/.env").write_text("TOKEN=secret\n")
    (users / "build").mkdir()
    (users / "build/out.py").write_text("X = 1\n")
    svc = session.load(repo).services["users"]
    for listed in (inputs.source_files(svc, repo), inputs.test_files(svc, repo)):
        assert "users/.env" not in listed
        assert "build/out.py" not in listed
    assert keys(repo) == before
    assert not _stamps_dirty(repo)["users"]
    # named by the manifest itself: carried, and the image is not the commit's
    manifest = users / "service.toml"
    manifest.write_text(
        manifest.read_text().replace(
            'include = ["users/**"]', 'include = ["users/**", "users/.env"]'
        )
    )
    svc = session.load(repo).services["users"]
    assert "users/.env" in inputs.source_files(svc, repo)
    assert _stamps_dirty(repo)["users"]


def _stamps_dirty(repo: Path) -> dict[str, bool]:
    project = session.load(repo)
    build = build_settings(project, "python:3.11-slim-bookworm", "tests")
    cache = ResultCache(repo, "tests", read=False, write=False)
    work = jobs.plan(project, list(project.services.values()), build, BASE, cache)
    return {job.service.name: job.stamp.dirty for job in work}


@pytest.mark.parametrize(
    "change",
    ["deleted input", "non-ASCII name", "edit", "untracked file", "staged edit", "mode"],
)
def test_dirty_means_any_input_differs_from_the_commit(repo: Path, change: str):
    app = repo / "services/users/users/app.py"
    assert not any(_stamps_dirty(repo).values())
    if change == "deleted input":
        (repo / "services/users/users/__init__.py").unlink()
    elif change == "non-ASCII name":
        (repo / "services/users/users/données é.py").write_text("X = 1\n")
    elif change == "edit":
        _append(app, "# x\n")
    elif change == "untracked file":
        (repo / "services/users/users/new.py").write_text("X = 1\n")
    elif change == "staged edit":
        _append(app, "# x\n")
        git(repo, "add", "-A")
    else:
        app.chmod(0o755)
    dirty = _stamps_dirty(repo)
    assert dirty["users"]
    assert not any(v for k, v in dirty.items() if k != "users")


def test_dirty_in_a_project_below_the_top_of_its_checkout(tmp_path: Path):
    top = tmp_path / "top"
    copy_example(top / "deep/repo", services=("users", "gateway"))
    shutil.rmtree(top / "deep/repo/.git")
    git(top, "init", "-q", "-b", "main")
    git(top, "add", "-A")
    git(top, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "x")
    repo = top / "deep/repo"
    assert not any(_stamps_dirty(repo).values())
    (repo / "services/users/users/__init__.py").unlink()
    _append(repo / "services/gateway/gateway/app.py", "# x\n")
    assert _stamps_dirty(repo) == {"users": True, "gateway": True}


def test_a_name_that_is_not_utf8_is_a_config_error(repo: Path):
    import os

    bad = os.fsencode(repo / "services/users/users") + b"/caf\xe9.py"
    with open(bad, "wb") as fh:  # noqa: PTH123 - a bytes path
        fh.write(b"X = 1\n")
    with pytest.raises(ConfigError, match=r"not UTF-8"):
        session.load(repo)


def test_a_service_at_the_root_never_reads_the_pipeline_folder(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pipeline.toml").write_text('services = ["."]\n[tiers.base]\nrequirements = []\n')
    (repo / "service.toml").write_text('name = "app"\ntier = "base"\ncommand = ["true"]\n')
    (repo / "app.py").write_text("X = 1\n")
    (repo / ".pipeline/cache/x").mkdir(parents=True)
    (repo / ".pipeline/cache/x/entry.json").write_text("{}")
    svc = session.load(repo).services["app"]
    assert inputs.source_files(svc, repo) == ["app.py", "pipeline.toml", "service.toml"]


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
    from pipeline.engine import images

    path = tmp_path / "requirements.txt"
    path.write_text(text)
    assert (images.query_text(path) == text) is inline


def test_a_file_that_is_not_utf8_is_uploaded(tmp_path: Path):
    from pipeline.engine import images

    path = tmp_path / "requirements.txt"
    path.write_bytes(b"caf\xe9==1.0\n")
    assert images.query_text(path) is None


def test_a_service_at_the_project_root_never_reads_the_pipelines_own_folder(tmp_path: Path):
    """The root is the service's folder: its result cache (.pipeline/) is never among its
    files, so a run's own records never change its key."""

    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print(1)\n")
    (tmp_path / "req.txt").write_text("six==1.17.0\n")
    (tmp_path / "pipeline.toml").write_text(
        'services = ["."]\nbase_image = "python:3.11-slim-bookworm"\n'
        '[tiers.base]\nrequirements = ["req.txt"]\n'
    )
    (tmp_path / "service.toml").write_text(
        'name = "rooted"\ntier = "base"\ninclude = ["**"]\ncommand = ["python", "-m", "app.main"]\n'
    )

    def key() -> str:
        project = session.load(tmp_path)
        settings = session.build_settings(project, "python:3.11-slim-bookworm", "tests")
        tiers = inputs.tier_inputs(project, settings, "sha256:" + "0" * 64)
        service = project.services["rooted"]
        assert not [f for f in inputs.source_files(service, tmp_path) if ".pipeline" in f]
        return inputs.service_inputs(project, service, tiers["base"]).key()

    before = key()
    (tmp_path / ".pipeline" / "cache" / "main" / "results").mkdir(parents=True)
    (tmp_path / ".pipeline" / "cache" / "main" / "results" / "x.json").write_text("{}\n")
    assert key() == before


def test_why_an_unchanged_service_is_built_again_says_so(tmp_path: Path):
    """An export or publish builds an image whose identical build is stored (a replay cannot
    write or push it): the reason says nothing changed, not that the stamp did."""
    from pipeline.core.outcomes import ImageFacts, Result, Status

    repo = copy_example(tmp_path / "repo", services=("echo",))
    project = session.load(repo)
    settings = build_settings(project, "python:3.11-slim-bookworm", "tests")
    cache = ResultCache(repo, "tests")
    base = "sha256:" + "0" * 64
    [job] = jobs.plan(project, [project.services["echo"]], settings, base, cache)
    assert jobs.changes(job, cache) == ["(no earlier build)"]
    facts = ImageFacts("sha256:" + "a" * 64, 1000, ("sha256:1",))
    tests = {"unit": True, "smoke": True, "health": True}
    jobs.record(job, Result("echo", "base", Status.OK, 1.0, facts, tests), cache, tested=True)
    [again] = jobs.plan(project, [project.services["echo"]], settings, base, cache)
    assert again.recorded == facts.digest
    assert jobs.changes(again, cache) == [
        "(nothing changed: the image is built again to be written or pushed)"
    ]
