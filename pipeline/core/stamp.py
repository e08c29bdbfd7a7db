"""Where an image came from: commit, branch, time and repository, read from git once; and the
stamp each image carries of it (build-info.json, OCI labels, tags)."""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pipeline.core.globs import is_ignored

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
