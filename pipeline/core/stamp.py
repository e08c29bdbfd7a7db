"""Where an image came from: commit, branch, time and repository, read from git once; and the
stamp each image carries of it (build-info.json, OCI labels, tags).

An image names the newest commit that changed what it is made of (its files, its tiers'
files, the config), not the commit the run is at: that commit's tree holds those inputs
exactly as the run's does, so it is as true, and a commit elsewhere in the monorepo leaves
the image, its digest and its stored result as they were. The run's commit and branch name
where the image is published (its tags), not what it is."""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pipeline.core.globs import is_ignored

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from pathlib import Path

UNKNOWN = "unknown"

Change = tuple[str, int]  # a commit and its time (epoch seconds)
# What an image is made of, for finding its newest change: root-relative paths, and whether
# a path no longer there would have been read (a deleted input).
Wanted = tuple["Iterable[str]", "Callable[[str], bool]"]


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
    # created_epoch is SOURCE_DATE_EPOCH: every image says it, whatever its commit
    fixed_time: bool = False
    # a clone without the history: its oldest commit stands for every older change
    shallow: bool = False
    # The newest change of each named input set (git's answer; absent: none known)
    history: Callable[[Mapping[str, Wanted]], Mapping[str, Change]] | None = field(
        default=None, compare=False, repr=False
    )

    def last_changes(self, wanted: Mapping[str, Wanted]) -> Mapping[str, Change]:
        return self.history(wanted) if self.history is not None and self.known else {}

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
        change: Change | None = None,
    ) -> Stamp:
        """The stamp of an image made from these host files (relative to the root): of the
        commit that last changed them (``change``; else the run's), dirty when any of them
        differs from the commit or is one git ignores, wherever it lies, or when a changed
        path the image would read (``would_read``: a deleted input) is gone. Without a
        commit time, the image is as old as its newest input file."""
        paths = list(inputs)
        dirty = any(p in self.modified or is_ignored(self.ignored, p) for p in paths) or (
            would_read is not None and any(would_read(p) for p in self.modified)
        )
        revision, created = self.revision, self.created
        if change is not None:
            revision = change[0]
            created = created if self.fixed_time else _utc(change[1])
        if self.created_epoch is None and self.root is not None:
            mtimes = [(self.root / p).stat().st_mtime for p in paths if (self.root / p).exists()]
            created = _utc(int(max(mtimes, default=0)))
        prov = (revision, self.branch, created, self.source_url)
        return Stamp(service, tier, *prov, dirty, self.release, self.revision)


@dataclass(frozen=True)
class Stamp:
    """What one image says of where it came from, and where the run that built it stood."""

    service: str
    tier: str
    revision: str  # the newest commit that changed the image's inputs
    branch: str  # the run's branch: its tags, not the image
    created: str
    source: str
    dirty: bool
    release: str = ""
    head: str = ""  # the run's commit: a tag, not the image ("" when the same as revision)

    @property
    def head_tag(self) -> str:
        """The run's commit as a tag, when it is not the image's own commit ("" else)."""
        if self.dirty or self.head in ("", UNKNOWN, self.revision):
            return ""
        return self.head[:12]

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

    def identity(self) -> tuple[str, dict[str, str]]:
        """All the stamp puts into the image: equal identities, equal stamped images."""
        return self.build_info(), self.labels()

    def build_info(self) -> str:
        """The contents of /app/build-info.json."""
        return json.dumps(
            {
                "service": self.service,
                "tier": self.tier,
                "commit": self.revision,
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


def cache_scope_for(branch: str) -> str:
    """A cache-volume-safe scope from a branch name: 'feature/x' -> 'feature-x'."""
    scope = re.sub(r"[^A-Za-z0-9_.-]+", "-", branch).strip("-.")
    return scope[:64] or "default"
