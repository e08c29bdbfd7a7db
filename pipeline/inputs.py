"""Everything an image is made from, as plain data: one ``Inputs`` per tier and per service.

The builders upload exactly the host files named here; ``--changed-since``, dirty detection
and the result cache read the same lists, so "what this image depends on" is said once.
Dagger-free: computing inputs never needs the engine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import globs

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pipeline.graph import Project, Service
    from pipeline.settings import BuildSettings

# Tool versions are inputs: a new uv may install the same requirements differently.
UV_VERSION = "0.13.9"
# Never uploaded, whatever a service's globs say: caches, bytecode, environments, VCS.
DEFAULT_EXCLUDES = ("**/__pycache__", "**/*.pyc", "**/.venv", "**/.pytest_cache", "**/.git")
LOCK_FILE = "uv.lock"


@cache
def pipeline_version() -> str:
    """The pipeline's own version: its release plus a digest of its code, so a change to how
    images are built never replays a result of the old code."""
    from importlib import metadata  # not at import: ``plan`` never needs it

    try:
        release = metadata.version("pipeline")
    except metadata.PackageNotFoundError:
        release = "0"
    return f"{release}+{code_digest()[:12]}"


@cache
def code_digest() -> str:
    """A digest of the pipeline's own code (every module's name and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@cache
def sdk_version() -> str:
    """The Dagger SDK's version: it decides which engine API the builders speak."""
    from importlib import metadata

    try:
        return metadata.version("dagger-io")
    except metadata.PackageNotFoundError:
        return "absent"


def file_digest(path: Path) -> str:
    """Content and executable bit: what a layer keeps of a file (mtimes are normalised)."""
    digest = hashlib.sha256(path.read_bytes())
    if path.stat().st_mode & 0o111:
        digest.update(b"\0x")
    return digest.hexdigest()


def walk(folder: Path, root: Path, include: Iterable[str], exclude: Iterable[str]) -> list[str]:
    """Files under ``folder`` (relative to it) that the globs select. Symlinks that lead out
    of the project are never followed."""
    inc, exc = globs.compile_all(include), globs.compile_all([*DEFAULT_EXCLUDES, *exclude])
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if globs.matches(exc, rel) or not globs.matches(inc, rel) or not path.is_file():
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            continue
        out.append(rel)
    return out


def source_files(service: Service, root: Path) -> list[str]:
    """The service folder's files its image carries (include/exclude globs), folder-relative."""
    spec = service.spec
    return walk(service.path, root, spec.include, spec.exclude)


def test_files(service: Service, root: Path) -> list[str]:
    """The folder's files its unit tests see: everything but what ``exclude`` keeps out."""
    return walk(service.path, root, ["**"], service.spec.exclude)


def service_requirement_files(service: Service) -> list[Path]:
    """The service's own requirements file, and its lock file when it is a pyproject."""
    req = service.requirements
    if req is None:
        return []
    files = [req]
    lock = req.parent / LOCK_FILE
    if req.name == "pyproject.toml" and lock.is_file():
        files.append(lock)
    return files


@dataclass(frozen=True)
class Inputs:
    """One image's inputs: host files by content, values by their JSON form."""

    name: str
    files: dict[str, str] = field(default_factory=dict)  # root-relative path -> digest
    values: dict[str, Any] = field(default_factory=dict)
    parent: Inputs | None = None

    @property
    def paths(self) -> list[str]:
        """Every host file this image reads, its parents' included."""
        own = list(self.files)
        return [*self.parent.paths, *own] if self.parent else own

    def key(self) -> str:
        """A digest of everything: equal keys, equal images."""
        data = {
            "name": self.name,
            "files": self.files,
            "values": self.values,
            "parent": self.parent.key() if self.parent else None,
        }
        encoded = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(encoded.encode()).hexdigest()

    def changes(self, other: Inputs | None) -> list[str]:
        """What differs from an earlier ``other``: file paths and value names."""
        if other is None:
            return ["(no earlier build)"]
        paths = sorted({*self.files, *other.files})
        out = [p for p in paths if self.files.get(p) != other.files.get(p)]
        out += [
            k
            for k in sorted({*self.values, *other.values})
            if self.values.get(k) != other.values.get(k)
        ]
        if (self.parent and self.parent.key()) != (other.parent and other.parent.key()):
            out += self.parent.changes(other.parent) if self.parent else ["(parent)"]
        return out


def _files(root: Path, paths: Iterable[Path]) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): file_digest(p) for p in paths}


def tier_inputs(project: Project, settings: BuildSettings, base_digest: str) -> dict[str, Inputs]:
    """Each tier's inputs, parents first; a child's include its parent's."""
    out: dict[str, Inputs] = {}
    for name, tier in project.tiers.items():
        parent = out[tier.spec.extends] if tier.spec.extends else None
        values: dict[str, Any] = {
            "apt": tier.spec.apt,
            "build_apt": tier.spec.build_apt,
            "requirements": [p.relative_to(project.root).as_posix() for p in tier.requirements],
        }
        if parent is None:
            values |= {
                "base_image": base_digest,
                "user": settings.user,
                "uid": settings.uid,
                "compile_bytecode": settings.compile_bytecode,
                "uv": UV_VERSION,
                "pipeline": pipeline_version(),
                "dagger_sdk": sdk_version(),
            }
        # The config file itself is an input of the root tier: an uncommitted edit to it makes
        # every image dirty.
        own = [project.config_file] if parent is None else []
        files = _files(project.root, [*own, *tier.requirements])
        out[name] = Inputs(f"tier:{name}", files, values, parent)
    return out


def service_inputs(project: Project, service: Service, tier: Inputs) -> Inputs:
    """A service's inputs: its manifest's values, its source and test files, its own and the
    project's test requirements, on top of its tier's."""
    root = project.root
    folder = service.path
    sources = source_files(service, root)
    tests = test_files(service, root) if service.spec.tests else []
    files = _files(root, [service.manifest, *(folder / rel for rel in sorted({*sources, *tests}))])
    files |= _files(root, service_requirement_files(service))
    if service.spec.tests:
        files |= _files(root, project.test_requirements)
    values = {
        "spec": service.spec.model_dump(mode="json"),
        "folder": folder.relative_to(root).as_posix(),
        "sources": sources,  # which files the image holds, apart from what tests see
    }
    return Inputs(f"service:{service.name}", files, values, tier)


def reads(project: Project, settings: BuildSettings) -> dict[str, set[str]]:
    """Every host file each service's image reads (root-relative), for ``--changed-since``."""
    tiers = tier_inputs(project, settings, settings.base_image)
    return {
        name: set(service_inputs(project, svc, tiers[svc.tier]).paths)
        for name, svc in project.services.items()
    }
