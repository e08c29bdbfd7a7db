"""Where an image came from: commit, branch, time and repository, read from git once; and the
stamp each image carries of it (build-info.json, OCI labels, tags)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pipeline.core.errors import UsageError
from pipeline.core.inputs import is_ignored

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

UNKNOWN = "unknown"


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Provenance:
    revision: str  # the commit, or UNKNOWN outside git
    branch: str
    created_epoch: int | None  # SOURCE_DATE_EPOCH or the commit time; None outside git
    source_url: str
    # Files that differ from the commit, relative to the project root.
    modified: frozenset[str] = frozenset()
    release: str = ""  # an explicit version (--version), or none
    root: Path | None = None
    # What git ignores (relative to the root; folders as "dir/"): never in the commit.
    ignored: frozenset[str] = frozenset()

    @property
    def known(self) -> bool:
        return self.revision != UNKNOWN

    @property
    def created(self) -> str:
        return _utc(self.created_epoch or 0)

    def stamp(
        self,
        service: str,
        tier: str,
        inputs: Iterable[str],
        would_read: Callable[[str], bool] | None = None,
    ) -> Stamp:
        """The stamp of an image made from these host files (relative to the root): dirty
        when any of them differs from the commit or is one git ignores, wherever it lies, or
        when a changed path the image would read (``would_read``: a deleted input) is gone.
        Without a commit time, the image is as old as its newest input file."""
        paths = list(inputs)
        dirty = any(p in self.modified or is_ignored(self.ignored, p) for p in paths) or (
            would_read is not None and any(would_read(p) for p in self.modified)
        )
        created = self.created
        if self.created_epoch is None and self.root is not None:
            mtimes = [(self.root / p).stat().st_mtime for p in paths if (self.root / p).exists()]
            created = _utc(int(max(mtimes, default=0)))
        prov = (self.revision, self.branch, created, self.source_url)
        return Stamp(service, tier, *prov, dirty, self.release)


@dataclass(frozen=True)
class Stamp:
    """What one image says of where it came from."""

    service: str
    tier: str
    revision: str
    branch: str
    created: str
    source: str
    dirty: bool
    release: str = ""

    @property
    def commit_tag(self) -> str:
        short = self.revision[:12]
        return f"{short}-dirty" if self.dirty else short

    @property
    def version(self) -> str:
        """The explicit version when given, else the commit (with '-dirty')."""
        if self.release:
            return f"{self.release}-dirty" if self.dirty else self.release
        return self.commit_tag

    def build_info(self) -> str:
        """The contents of /app/build-info.json."""
        return json.dumps(
            {
                "service": self.service,
                "tier": self.tier,
                "commit": self.revision,
                "branch": self.branch,
                "dirty": self.dirty,
                "version": self.version,
                "created": self.created,
                "source": self.source,
            },
            indent=2,
            sort_keys=True,
        )

    def labels(self) -> dict[str, str]:
        labels = {
            "org.opencontainers.image.title": self.service,
            "org.opencontainers.image.revision": self.revision,
            "org.opencontainers.image.created": self.created,
            "org.opencontainers.image.source": self.source,
            "org.opencontainers.image.version": self.version,
            "io.pipeline.tier": self.tier,
        }
        return {k: v for k, v in labels.items() if v}


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


# scp-like remotes: [user[:password]@]host:path, with no scheme
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[A-Za-z0-9.-]+):(?P<path>(?!//).+)$")


def public_url(remote: str) -> str:
    """A remote as a browsable URL with no credentials, or "" for a local path: ssh, git and
    scp-like remotes become https; user, password, query and fragment are dropped."""
    remote = remote.strip()
    scp = _SCP_LIKE.match(remote)
    if scp and "://" not in remote and len(scp["host"]) > 1:  # 'C:' is a drive, not a host
        host, path = scp["host"], scp["path"]
        return f"https://{host}/{path.lstrip('/')}".removesuffix("/").removesuffix(".git")
    parts = urllib.parse.urlsplit(remote)
    if (
        parts.scheme not in ("http", "https", "ssh", "git", "git+ssh", "ssh+git")
        or not parts.hostname
    ):
        return ""  # a local path or file:// remote: nowhere others can browse
    scheme = parts.scheme if parts.scheme in ("http", "https") else "https"
    port = f":{parts.port}" if parts.port and scheme == parts.scheme else ""
    path = parts.path.rstrip("/").removesuffix(".git")
    return f"{scheme}://{parts.hostname}{port}{path}"


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


DEFAULT_BRANCHES = frozenset({"main", "master"})


def immutable_tags(stamp: Stamp) -> list[str]:
    """Tags that name one build: the commit ('-dirty' when any input of the image differs
    from it) and the explicit version. A dirty build gets only its commit tag."""
    if stamp.dirty:
        return [stamp.commit_tag]
    tags = [stamp.commit_tag] if stamp.revision != UNKNOWN else []
    return [*tags, stamp.release] if stamp.release else tags


def moving_tags(stamp: Stamp) -> list[str]:
    """Tags that follow a line of builds: the branch, and 'latest' from a default branch.
    Only a clean build of a known commit moves them."""
    if stamp.dirty or stamp.revision == UNKNOWN:
        return []
    tags = [f"branch-{cache_scope_for(stamp.branch)}"]
    return [*tags, "latest"] if stamp.branch in DEFAULT_BRANCHES else tags


def tags_for(stamp: Stamp) -> list[str]:
    """Every tag an image is published under: immutable ones first."""
    return [*immutable_tags(stamp), *moving_tags(stamp)]


def cache_scope_for(branch: str) -> str:
    """A cache-volume-safe scope from a branch name: 'feature/x' -> 'feature-x'."""
    scope = re.sub(r"[^A-Za-z0-9_.-]+", "-", branch).strip("-.")
    return scope[:64] or "default"
