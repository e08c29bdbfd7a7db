"""What a user sees of a run under `dagger run`, off a TTY (as in CI): a short log and the
summary last, no in-container program's source; `-v` gives Dagger's full progress."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from tests.conftest import ROOT, copy_example

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

PROGRAMS = sorted((ROOT / "pipeline" / "engine" / "programs").glob("[!_]*.py"))


def dagger_run(repo: Path, base_image: str, *args: str) -> list[str]:
    """`dagger run python -m pipeline build ARGS` on ``repo``, stdout and stderr as one stream
    (as a CI log holds them), its lines; the run must succeed."""
    cli = os.environ.get("_EXPERIMENTAL_DAGGER_CLI_BIN") or shutil.which("dagger")
    assert cli, "no Dagger CLI: scripts/engine env names one"
    where = ["--project-dir", str(repo), "--base-image", base_image]
    scope = ["--cache-scope", f"tests-output-{time.time_ns()}"]
    done = subprocess.run(
        [cli, "run", sys.executable, "-m", "pipeline", "build", *where, *scope, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        check=False,
        timeout=900,
        # from inside the monorepo, as a user runs it: the CLI reads the folder's git remote
        # (v0.11's warns, last, about one it cannot parse, such as a local path)
        cwd=repo,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    lines = done.stdout.rstrip("\n").splitlines()  # v0.21's CLI ends with a blank line
    # v0.11's CLI closes with its own session's line ("✔ connect 0.2s") once the command exits
    while lines and re.fullmatch(r"(\x1b\[[0-9;]*m)*✔(\x1b\[[0-9;]*m)* connect .*", lines[-1]):
        lines.pop()
    return lines


def test_under_dagger_run_the_summary_is_last_and_the_log_short(tmp_path: Path, base_image: str):
    repo = copy_example(tmp_path / "repo", services=("echo", "users"))
    page = tmp_path / "out" / "report.html"
    quiet = dagger_run(repo, base_image, "--no-cache", "--report-html", str(page))
    text = "\n".join(quiet)
    # the summary table closes the output: nothing of Dagger's progress comes after it
    assert quiet[-2] == "2 built, 0 failed", text[-2000:]
    assert quiet[-1].startswith("wall time "), text[-2000:]
    header = next(i for i, line in enumerate(quiet) if line.startswith("SERVICE  TIER"))
    assert {line.split()[0] for line in quiet[header + 1 : header + 3]} == {"echo", "users"}
    # a few lines per service and a few of the CLI's own: the example's 7 stay under 60
    assert len(quiet) <= 40, text
    for program in PROGRAMS:
        first = program.read_text().splitlines()[0].strip('"')
        assert first not in text, f"{program.name}'s source is in the output"

    # the build report to open: each service with its steps as the run timed them
    html = page.read_text()
    for service in ("echo", "users"):
        for step in ("tier", "image", "unit", "smoke", "health", "export"):
            assert f"{service} \u00b7 {step}: +" in html, (service, step)  # its bar's title

    def execs(lines: list[str]) -> int:
        """Lines of Dagger's progress that show a step run in a container."""
        return sum(bool(re.search(r"\b(withExec|exec) ", line)) for line in lines)

    assert execs(quiet) == 0, text
    full = dagger_run(repo, base_image, "--no-cache", "-v")
    assert execs(full) >= 3, "\n".join(full)  # -v: Dagger's progress of every step
    assert any(line.startswith("SERVICE  TIER") for line in full)
