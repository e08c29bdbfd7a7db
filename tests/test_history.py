"""Each run's figures are kept per scope, bounded; `pipeline history SERVICE` prints them; a
run says when an image grew more than the set share since the last run of its scope or main."""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING

import pytest

from pipeline.core.outcomes import ImageFacts, Result, Status
from pipeline.edges import history
from pipeline.edges.resultcache import ResultCache
from tests.conftest import copy_example, pipeline_in, run_pipeline

if TYPE_CHECKING:
    from pathlib import Path


def result(service: str, size: int, duration: float = 1.0, ok: bool = True) -> Result:
    facts = ImageFacts("sha256:" + f"{size:x}".rjust(64, "0"), size, ("sha256:1",))
    status = Status.OK if ok else Status.FAILED
    return Result(service, "base", status, duration, facts if ok else None)


def test_history_is_kept_per_scope_bounded_and_survives_a_damaged_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(history, "KEEP", 3)
    for i in range(5):
        run = history.Run.of(
            [result("users", 1_000_000 + i)], 1_700_000_000 + i, f"rev{i}", "build"
        )
        history.append(tmp_path, "main", run)
    runs = history.read(tmp_path, "main")
    assert [r.revision for r in runs] == ["rev2", "rev3", "rev4"]  # the oldest went first
    assert history.read(tmp_path, "feature-x") == []  # scopes apart
    path = ResultCache(tmp_path, "main").dir / history.NAME
    path.write_text(path.read_text() + "{not json\n")
    assert [r.revision for r in history.read(tmp_path, "main")] == ["rev2", "rev3", "rev4"]
    history.append(
        tmp_path, "main", history.Run.of([result("users", 9)], 1_800_000_000, "rev5", "build")
    )
    assert [r.revision for r in history.read(tmp_path, "main")] == ["rev3", "rev4", "rev5"]


def test_the_last_run_is_the_latest_that_reads_and_earlier_lines_are_kept_as_written(
    tmp_path: Path,
):
    assert history.last(tmp_path, "main") is None
    for i in range(2):
        run = history.Run.of([result("users", 1_000 + i)], 1_700_000_000 + i, f"rev{i}", "build")
        history.append(tmp_path, "main", run)
    path = ResultCache(tmp_path, "main").dir / history.NAME
    first, second = path.read_text().splitlines()
    newer = json.loads(second) | {"runner": "a field a later version writes"}
    path.write_text(f"{first}\n{json.dumps(newer, sort_keys=True)}\n{{not json\n")
    latest = history.last(tmp_path, "main")
    assert latest is not None and latest.revision == "rev1"  # the damaged line is passed over
    history.append(tmp_path, "main", history.Run.of([result("users", 7)], 1.8e9, "rev2", "build"))
    lines = path.read_text().splitlines()
    assert lines[:2] == [first, json.dumps(newer, sort_keys=True)]  # byte for byte
    assert [json.loads(line)["revision"] for line in lines] == ["rev0", "rev1", "rev2"]


def test_a_change_is_measured_against_the_earlier_run():
    before = history.Run.of(
        [result("users", 50_000_000, 10.0), result("gone", 1)], 1.0, "a" * 40, "build"
    )
    now = history.Run.of(
        [result("users", 56_000_000, 8.0), result("new", 5), result("broken", 0, ok=False)],
        2.0,
        "b" * 40,
        "build",
    )
    [change] = history.changes(now, before, "main")
    assert (change.service, change.size_before, change.size_now) == (
        "users",
        50_000_000,
        56_000_000,
    )
    assert change.grown == pytest.approx(0.12)
    assert (change.time_before, change.time_now) == (10.0, 8.0)
    assert change.warning() == "users grew 6.0 MB (+12%) since the last run of main (aaaaaaaaaaaa)"
    assert history.changes(now, None, "main") == []


def test_the_history_command_prints_the_series_with_each_change(tmp_path: Path):
    repo = copy_example(tmp_path / "repo", services=("users",))
    for i, size in enumerate((64_000_000, 64_500_000)):
        run = history.Run.of(
            [result("users", size, 3.0 + i)], 1_764_500_000 + 60 * i, f"{i}" * 40, "build"
        )
        history.append(repo, "feature", run)
    done = run_pipeline("history", "users", "--project-dir", str(repo), "--cache-scope", "feature")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["WHEN", "(UTC)", "REVISION", "COMMAND"]
    assert lines[1].split()[2:6] == ["000000000000", "build", "ok", "64.0"]
    assert "+0.5 MB" in lines[2] and "111111111111" in lines[2]
    assert "scope feature: the last 2 runs are kept (at most 200)" in lines[-1]
    unknown = run_pipeline(
        "history", "nope", "--project-dir", str(repo), "--cache-scope", "feature"
    )
    assert unknown.returncode == 2
    assert "nope" in unknown.stderr and "Traceback" not in unknown.stderr
    empty = run_pipeline("history", "users", "--project-dir", str(repo), "--cache-scope", "other")
    assert empty.returncode == 0
    assert empty.stdout.strip() == "no run of scope other has built users yet"


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_run_warns_when_an_image_grew_since_the_last_run(tmp_path: Path, base_image: str):
    repo = copy_example(tmp_path / "repo", services=("echo",))
    scope = "tests-history"
    first = pipeline_in(repo, base_image, "build", "echo", "--no-test", scope=scope)
    assert first.returncode == 0, first.stderr
    assert "warning:" not in first.stdout
    server = repo / "services" / "echo" / "echo" / "server.py"
    # about 10 kB more in the image, compressed: random text does not compress away
    server.write_text(server.read_text() + "\n# " + os.urandom(10_000).hex() + "\n")
    report, page = tmp_path / "report.json", tmp_path / "report.html"
    again = pipeline_in(
        repo, base_image, "build", "echo", "--no-test", "--growth-warning", "0.001",
        "--report", str(report), "--report-html", str(page), scope=scope,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines[-2].startswith("warning: echo grew "), again.stdout
    assert "since the last run of this scope" in lines[-2]
    assert lines[-1].startswith("wall time ")
    [change] = json.loads(report.read_text())["history"]
    assert change["service"] == "echo" and change["size_now"] > change["size_before"]
    html = page.read_text()
    assert "<h2>Since the last run</h2>" in html
    assert re.search(r"<td>echo</td><td>this scope \(<code>[0-9a-f]{12}</code>\)</td>", html)
    runs = history.read(repo, scope)
    assert len(runs) == 2 and runs[0].services["echo"].digest != runs[1].services["echo"].digest
