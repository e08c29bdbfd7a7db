"""The GitHub workflows pass actionlint and zizmor with no findings (no engine needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def workflow_files() -> list[str]:
    files = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
    assert files, f"no workflows in {WORKFLOWS}"
    return [str(f.relative_to(ROOT)) for f in files]


def zizmor() -> str:
    """The zizmor of the environment running the tests (the lint group), else one on PATH."""
    beside = Path(sys.executable).with_name("zizmor")
    found = str(beside) if beside.is_file() else shutil.which("zizmor")
    assert found, "zizmor is missing: it comes with the lint group (uv sync --all-groups)"
    return found


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)


def test_actionlint_finds_nothing():
    # scripts/actionlint builds the pinned actionlint on first use (about a minute), and
    # actionlint runs shellcheck on every `run:` script when shellcheck is on PATH.
    done = run(str(ROOT / "scripts" / "actionlint"), "-no-color", *workflow_files())
    report = f"actionlint exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, report
    assert not done.stdout.strip(), report


def test_zizmor_finds_nothing():
    # Offline: CI has no GitHub API token, and the online audits need one.
    done = run(zizmor(), "--offline", "--no-progress", "--color=never", *workflow_files())
    report = f"zizmor exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, report
    assert "No findings to report" in done.stdout, report


def jobs(path: Path) -> dict[str, str]:
    """Each job's text in a workflow, by the job's id (two-space keys under ``jobs:``)."""
    text = path.read_text().split("\njobs:\n", 1)[1]
    parts = re.split(r"^  ([\w-]+):\n", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_a_carried_cache_holds_only_the_scope_that_exported_it():
    # A pull request restores its own scope's folder, or main's; the folder it saves must
    # hold its own export only (else it carries main's too, twice the size bound).
    checked = 0
    for path in map(ROOT.joinpath, workflow_files()):
        for job, text in jobs(path).items():
            for folder in re.findall(r"cache export (\S+)", text):
                restores = rf"actions/cache/restore@.*\n(?:.*\n)*?\s+path: {re.escape(folder)}\n"
                if re.search(restores, text):
                    before = text.split(f"cache export {folder}", 1)[0]
                    last_step = before.rsplit("\n      - ", 1)[-1]
                    assert f"rm -rf {folder}\n" in last_step, (path.name, job, last_step)
                    checked += 1
    assert checked, "no job restores a carried cache and exports it again"
