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
    from collections.abc import Iterator, Mapping
    from pathlib import Path
    from typing import IO

    from pipeline.core.stamp import Change, Wanted


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


def last_changes(root: Path, wanted: Mapping[str, Wanted]) -> dict[str, Change]:
    """For each name, the newest commit on HEAD's first-parent line that changed any of its
    paths (a merge counts as the change its branch brought), with that commit's time: the
    commit whose tree holds those paths exactly as HEAD does. A path no name holds any
    more counts for each name that ``would_read`` it (a deleted input). One ``git log``
    that stops as soon as every name is answered; a name left unanswered (no history, or
    only untracked paths) is absent."""
    owners: dict[str, list[str]] = {}
    for name, (paths, _) in wanted.items():
        for path in paths:
            owners.setdefault(path, []).append(name)
    found: dict[str, Change] = {}
    args = ["git", "-C", str(root), "log", "--first-parent", "--diff-merges=first-parent"]
    args += ["--no-renames", "--relative", "-z", "--name-only", "--format=%x01%H %ct", "HEAD"]
    try:
        walk = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return found
    try:
        for commit in _commits(walk.stdout):  # type: ignore[arg-type]  # a PIPE
            head, *paths = commit
            revision, _, epoch = head.partition(" ")
            for path in paths:
                names = owners.get(path)
                if names is None:  # nobody holds it now: whoever would read it lost it
                    names = [n for n in wanted if n not in found and wanted[n][1](path)]
                for name in names:
                    found.setdefault(name, (revision, int(epoch)))
            if len(found) == len(wanted):
                break
    finally:
        walk.kill()
        walk.wait()
        walk.stdout.close()  # type: ignore[union-attr]  # a PIPE
    return found


def _commits(stream: IO[bytes]) -> Iterator[list[str]]:
    """The commits of a ``log -z --name-only --format=%x01...`` stream, as they come: each
    its header, then its paths."""
    pending = b""
    for chunk in iter(lambda: os.read(stream.fileno(), 65536), b""):
        pending += chunk
        *whole, pending = pending.split(b"\x01")
        for record in whole:
            if record:
                yield _record(record)
    if pending:
        yield _record(pending)


def _record(record: bytes) -> list[str]:
    return [os.fsdecode(f.strip(b"\n")) for f in record.split(b"\0") if f.strip(b"\n")]


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
        revision,
        branch,
        epoch,
        public_url(source_url),
        modified,
        release or "",
        root,
        ignored,
        fixed_time=env.get("SOURCE_DATE_EPOCH", "").isdigit(),
        shallow=_git(root, "rev-parse", "--is-shallow-repository") == "true",
        history=lambda wanted: last_changes(root, wanted),
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
