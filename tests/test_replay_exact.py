"""A replay always equals what a --no-cache build in a fresh scope gives. Against the real
engine, one service goes through a table of changes to its inputs, one after another; after
each, a build that may replay from the result cache and a --no-cache build in a scope never
used before must agree on the outcome and the image digest, and the replay must happen
exactly when the image cannot differ."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import copy_example, git, pipeline_in

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

MANIFEST = """\
tier = "base"
command = ["python", "-c", "import time; time.sleep(60)"]
include = ["app/**"]
smoke = ["python", "-c", "import app.main, app.alias, app.util; print(app.main.X)"]
"""


def _repo(tmp_path: Path) -> Path:
    repo = copy_example(tmp_path / "repo", services=("-",))
    folder = repo / "services/svc"
    (folder / "app").mkdir(parents=True)
    (folder / "service.toml").write_text(MANIFEST)
    (folder / "app/__init__.py").write_text("")
    (folder / "app/main.py").write_text("X = 1\n")
    (folder / "app/util.py").write_text("Y = 2\n")
    (folder / "app/extra.py").write_text("Z = 3\n")
    (folder / "app/data.txt").write_text("data\n")
    (folder / "app/thing").write_text("a file\n")
    (folder / "app/alias.py").symlink_to("main.py")
    for path in (folder, *folder.rglob("*")):  # known modes, whatever the umask
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    (repo / ".gitignore").write_text(".env\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "svc")
    return repo


def _app(repo: Path) -> Path:
    return repo / "services/svc/app"


def _retarget(link: Path, target: str) -> None:
    link.unlink()
    link.symlink_to(target)


def _to_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inner.txt").write_text("now a folder\n")


def _to_copy(link: Path) -> None:
    text = link.read_text()
    link.unlink()
    link.write_text(text)


def _touch(path: Path) -> None:
    later = time.time() + 3600
    os.utime(path, (later, later))


# name: (change, whether the image may be replayed from the result cache afterwards)
ROWS: list[tuple[str, Callable[[Path], Any], bool]] = [
    ("nothing changed", lambda _: None, True),
    (
        "a file made unreadable (chmod 600, as under umask 077)",
        lambda a: (a / "main.py").chmod(0o600),
        False,
    ),
    ("its mode restored: the earlier result again", lambda a: (a / "main.py").chmod(0o644), True),
    ("the executable bit set", lambda a: (a / "main.py").chmod(0o755), False),
    ("a folder closed to others (chmod 700)", lambda a: a.chmod(0o700), False),
    ("the folder's mode restored: the earlier result again", lambda a: a.chmod(0o755), True),
    ("a file of the same bytes added", lambda a: (a / "copy.py").write_text("X = 1\n"), False),
    (
        "a symlink retargeted to a file of equal bytes",
        lambda a: _retarget(a / "alias.py", "copy.py"),
        False,
    ),
    ("a rename", lambda a: (a / "data.txt").rename(a / "data2.txt"), False),
    ("a case-only rename", lambda a: (a / "extra.py").rename(a / "Extra.py"), False),
    ("an empty file added", lambda a: (a / "empty.py").write_text(""), False),
    ("a file becoming a folder", lambda a: _to_folder(a / "thing"), False),
    ("a file deleted", lambda a: (a / "Extra.py").unlink(), False),
    (
        "a file added outside the include globs",
        lambda a: (a.parent / "NOTES.txt").write_text("x\n"),
        True,
    ),
    ("an edit", lambda a: (a / "main.py").write_text("X = 2\n"), False),
    ("a symlink replaced by a copy of its target", lambda a: _to_copy(a / "alias.py"), False),
    (
        "a file with a non-ASCII name added",
        lambda a: (a / "données_é.py").write_text("W = 4\n"),
        False,
    ),
    ("a file git ignores added (.env)", lambda a: (a / ".env").write_text("TOKEN=secret\n"), True),
    ("only a file's time changed", lambda a: _touch(a / "main.py"), True),
]


def _build(repo: Path, base: str, scope: str, *args: str) -> dict[str, Any]:
    report = repo.parent / f"report-{time.time_ns()}.json"
    done = pipeline_in(repo, base, "build", "--report", str(report), *args, scope=scope)
    assert done.returncode in (0, 1), done.stderr
    assert not any(ln.startswith("Traceback") for ln in done.stderr.splitlines()), done.stderr
    (service,) = json.loads(report.read_text())["services"]
    why = [json.loads(ln) for ln in done.stderr.splitlines() if '"rebuild_needed"' in ln]
    return {**service, "why": why[0]["changed"] if why else []}


def _outcome(result: dict[str, Any]) -> tuple[str, str | None]:
    image = result["image"] or {}
    return result["status"], image.get("digest") if result["status"] == "ok" else None


def test_a_replay_equals_a_no_cache_build_in_a_fresh_scope(tmp_path: Path, base_image: str):
    repo = _repo(tmp_path)
    scope, run = "tests-exact", time.time_ns()
    first = _build(repo, base_image, f"{scope}-{run}")
    assert first["status"] == "ok", first["reason"]
    failures = []
    for i, (name, change, replays) in enumerate(ROWS):
        change(_app(repo))
        # side by side: they share nothing but the engine's layer cache
        with ThreadPoolExecutor(2) as pool:
            later = pool.submit(_build, repo, base_image, f"{scope}-{run}-fresh-{i}", "--no-cache")
            replay = _build(repo, base_image, f"{scope}-{run}")
            truth = later.result()
        if _outcome(replay) != _outcome(truth) or replay["cached"] is not replays:
            failures.append(
                f"{name}: replay {_outcome(replay)} (cached {replay['cached']}, changed "
                f"{replay['why']}), --no-cache {_outcome(truth)}"
            )
    assert not failures, "\n".join(failures)


def test_checks_are_reused_only_for_the_image_a_stored_result_names(
    tmp_path: Path, base_image: str
):
    """An export rebuilds through the engine and would reuse the checks stored for its key;
    when the image it gets is not the one the stored result names, the checks run again."""
    from pipeline.core.outcomes import Kind
    from pipeline.edges.resultcache import seal

    repo = _repo(tmp_path)
    scope = f"tests-exact-{time.time_ns()}"
    first = _build(repo, base_image, scope)
    assert first["status"] == "ok", first["reason"]
    (entry,) = (repo / ".pipeline/cache" / scope / "results").glob("*.json")
    stored = json.loads(entry.read_text())
    stored["value"]["image"]["digest"] = "sha256:" + "1" * 64  # another image, said properly
    stored["digest"] = seal(Kind.RESULTS, stored["key"], stored["value"])
    entry.write_text(json.dumps(stored))
    out = tmp_path / "out"
    report = tmp_path / "export.json"
    done = pipeline_in(
        repo, base_image, "export", "--out", str(out), "--report", str(report), scope=scope
    )
    assert done.returncode == 0, done.stderr
    assert '"cache_entry_contradicted"' in done.stderr
    (service,) = json.loads(report.read_text())["services"]
    assert service["reused_checks"] == []
    assert service["tests"] == {"smoke": True}
    assert "smoke" in service["steps"]  # it ran
    assert service["image"]["digest"] == first["image"]["digest"]
