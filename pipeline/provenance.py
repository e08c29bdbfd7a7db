"""Where an image came from: commit, branch, time and repository, read from git once; and the
stamp each image carries of it (build-info.json, OCI labels, tags)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pipeline.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path


@dataclass(frozen=True)
class Provenance:
    revision: str
    branch: str
    created_epoch: int
    source_url: str
    # Files that differ from the commit, relative to the project root.
    modified: frozenset[str] = frozenset()

    @property
    def created(self) -> str:
        return datetime.fromtimestamp(self.created_epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def stamp(self, service: str, tier: str, inputs: Iterable[str]) -> Stamp:
        """The stamp of an image made from these host files (relative to the root): dirty
        when any of them differs from the commit, wherever it lies."""
        dirty = any(path in self.modified for path in inputs)
        prov = (self.revision, self.branch, self.created, self.source_url)
        return Stamp(service, tier, *prov, dirty)


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

    @property
    def version(self) -> str:
        short = self.revision[:12] if self.revision != "unknown" else "unknown"
        return f"{short}-dirty" if self.dirty else short

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
        return {
            "org.opencontainers.image.title": self.service,
            "org.opencontainers.image.revision": self.revision,
            "org.opencontainers.image.created": self.created,
            "org.opencontainers.image.source": self.source,
            "org.opencontainers.image.version": self.version,
            "io.pipeline.tier": self.tier,
        }


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _public_url(remote: str) -> str:
    """A remote as a browsable https URL, without credentials."""
    remote = re.sub(r"^git@([^:]+):", r"https://\1/", remote)
    remote = re.sub(r"^(https?://)[^/@]+@", r"\1", remote)
    return remote.removesuffix(".git")


def read_provenance(root: Path, source_url: str | None = None) -> Provenance:
    env = os.environ
    revision = _git(root, "rev-parse", "HEAD") or env.get("GITHUB_SHA") or "unknown"
    branch = (
        env.get("GITHUB_HEAD_REF")
        or _git(root, "symbolic-ref", "--short", "-q", "HEAD")
        or env.get("GITHUB_REF_NAME")
        or "detached"
    )
    changed = _git(root, "diff", "--name-only", "--no-renames", "HEAD") or ""
    untracked = _git(root, "ls-files", "--others", "--exclude-standard") or ""
    modified = frozenset(p for p in (changed + "\n" + untracked).splitlines() if p)
    # SOURCE_DATE_EPOCH wins; else the commit time, so two builds of one commit agree.
    epoch_text = env.get("SOURCE_DATE_EPOCH") or _git(root, "log", "-1", "--format=%ct")
    epoch = int(epoch_text) if epoch_text and epoch_text.isdigit() else 0
    if source_url is None:
        remote = _git(root, "remote", "get-url", "origin")
        if remote:
            source_url = _public_url(remote)
        elif env.get("GITHUB_REPOSITORY"):
            server = env.get("GITHUB_SERVER_URL", "https://github.com")
            source_url = f"{server}/{env['GITHUB_REPOSITORY']}"
        else:
            source_url = ""
    return Provenance(revision, branch, epoch, source_url, modified)


def changed_since(root: Path, ref: str) -> list[str]:
    """Files that differ between ``ref`` and the working tree, untracked ones included,
    relative to the project root."""
    base = _git(root, "merge-base", ref, "HEAD")
    if base is None:
        raise UsageError(f"--changed-since {ref}: git knows no such commit in {root}")
    diff = _git(root, "diff", "--name-only", "--relative", "--no-renames", base) or ""
    untracked = _git(root, "ls-files", "--others", "--exclude-standard") or ""
    return [p for p in (diff + "\n" + untracked).splitlines() if p]


DEFAULT_BRANCHES = frozenset({"main", "master"})


def tags_for(stamp: Stamp) -> list[str]:
    """Tags an image is published under: the commit (immutable; '-dirty' when any input of
    the image differs from it), the branch (moving), and 'latest' from a default branch only.
    A dirty build gets only its commit tag: it must never move a shared tag."""
    if stamp.dirty or stamp.revision == "unknown":
        return [stamp.version]
    tags = [stamp.version, f"branch-{cache_scope_for(stamp.branch)}"]
    if stamp.branch in DEFAULT_BRANCHES:
        tags.append("latest")
    return tags


def cache_scope_for(branch: str) -> str:
    """A cache-volume-safe scope from a branch name: 'feature/x' -> 'feature-x'."""
    scope = re.sub(r"[^A-Za-z0-9_.-]+", "-", branch).strip("-.")
    return scope[:64] or "default"
