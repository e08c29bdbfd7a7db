"""What git says of the project: its commit, branch, time, remote, what differs from the
commit and what git ignores. Every git call of a run is here; the core takes the answers as
data."""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

from pipeline.core.errors import UsageError
from pipeline.core.stamp import UNKNOWN, Provenance, public_url

if TYPE_CHECKING:
    from pathlib import Path


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git_paths(root: Path, *args: str) -> list[str] | None:
    """NUL-separated paths a git command prints (``-z``): every name as it is, whatever its
    characters (a plain listing quotes non-ASCII names)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, check=False, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return [os.fsdecode(p) for p in done.stdout.split(b"\0") if p]


def ignored_paths(root: Path) -> frozenset[str]:
    """What git ignores under ``root``, relative to it: files, and folders as "dir/" (not
    entered). Empty outside a git checkout."""
    listed = _git_paths(
        root, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"
    )
    return frozenset(listed or ())


def _modified(root: Path) -> frozenset[str]:
    """Every path under ``root`` (relative to it) that differs from the commit: changed,
    added, deleted or untracked, staged or not, named exactly."""
    prefix = _git(root, "rev-parse", "--show-prefix") or ""
    entries = _git_paths(
        root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames", "--", "."
    )
    # each entry is "XY path", paths relative to the top of the checkout
    paths = (e[3:] for e in entries or ())
    return frozenset(p.removeprefix(prefix) for p in paths if p.startswith(prefix))


def read_provenance(
    root: Path,
    source_url: str | None = None,
    release: str | None = None,
    ignored: frozenset[str] = frozenset(),
) -> Provenance:
    env = os.environ
    revision = _git(root, "rev-parse", "HEAD") or env.get("GITHUB_SHA") or UNKNOWN
    branch = (
        env.get("GITHUB_HEAD_REF")
        or _git(root, "symbolic-ref", "--short", "-q", "HEAD")
        or env.get("GITHUB_REF_NAME")
        or "detached"
    )
    modified = _modified(root)
    # SOURCE_DATE_EPOCH wins; else the commit time, so two builds of one commit agree.
    epoch_text = env.get("SOURCE_DATE_EPOCH") or _git(root, "log", "-1", "--format=%ct")
    epoch = int(epoch_text) if epoch_text and epoch_text.isdigit() else None
    if source_url is None:
        remote = _git(root, "remote", "get-url", "origin")
        if remote:
            source_url = remote
        elif env.get("GITHUB_REPOSITORY"):
            server = env.get("GITHUB_SERVER_URL", "https://github.com")
            source_url = f"{server}/{env['GITHUB_REPOSITORY']}"
        else:
            source_url = ""
    return Provenance(
        revision, branch, epoch, public_url(source_url), modified, release or "", root, ignored
    )


def changed_since(root: Path, ref: str) -> list[str]:
    """Files that differ between ``ref`` and the working tree, untracked ones included,
    relative to the project root."""
    base = _git(root, "merge-base", ref, "HEAD")
    if base is None:
        raise UsageError(f"--changed-since {ref}: git knows no such commit in {root}")
    diff = _git_paths(root, "diff", "-z", "--name-only", "--relative", "--no-renames", base)
    untracked = _git_paths(root, "ls-files", "-z", "--others", "--exclude-standard")
    return [*(diff or ()), *(untracked or ())]
