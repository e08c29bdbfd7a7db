"""Everything an image is made from, as plain data: one ``Inputs`` per tier and per service.

The builders upload exactly the host files named here; ``--changed-since``, dirty detection
and the result cache read the same lists, so "what this image depends on" is said once.
Dagger-free: computing inputs never needs the engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core import globs
from pipeline.core.errors import ConfigError
from pipeline.core.globs import ignored_below, is_ignored

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from pipeline.core.model import Project, Service
    from pipeline.core.settings import BuildSettings
    from pipeline.core.workspace import Library

# Tool versions are inputs: a new uv may install the same requirements differently.
UV_VERSION = "0.13.9"
# Never uploaded, whatever a service's globs say: caches, bytecode, environments, VCS, and the
# pipeline's own folder (a service at the project root would otherwise read its own cache).
DEFAULT_EXCLUDES = (
    "**/__pycache__",
    "**/*.pyc",
    "**/.venv",
    "**/.pytest_cache",
    "**/.git",
    ".pipeline",
)
_GLOB_CHARS = frozenset("*?[")
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
    """What an upload keeps of an entry, and so what its image gets: its kind, its whole mode
    and its bytes, or a link's target as text (mtimes are normalised in every layer)."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        kind, body = b"link", os.fsencode(path.readlink())
    elif stat.S_ISDIR(st.st_mode):
        kind, body = b"dir", b""
    else:
        kind, body = b"file", path.read_bytes()
    head = kind + b"\0" + oct(stat.S_IMODE(st.st_mode)).encode() + b"\0"
    return hashlib.sha256(head + body).hexdigest()


def _literal(patterns: Iterable[str]) -> frozenset[str]:
    """The include patterns that name one path, with no wildcard."""
    return frozenset(p.strip("/") for p in patterns if not _GLOB_CHARS.intersection(p))


def walk(
    folder: Path,
    root: Path,
    include: Iterable[str],
    exclude: Iterable[str],
    ignored: frozenset[str] = frozenset(),
    manifest: Path | None = None,
) -> list[str]:
    """Files under ``folder`` (relative to it) that the globs select: what its upload carries.

    What git ignores (``ignored``, folder-relative) is left out unless an include pattern
    names the file itself. A symlink is carried as a link, so it must point, by a relative
    path, at a file or folder the same upload carries; any other link, and a name the image
    cannot carry (not UTF-8), is a configuration error naming the entry and the fix. Folders
    that are excluded or ignored are never entered."""
    del root  # the folder alone decides; kept for callers that name the project
    include = list(include)
    inc, exc = globs.compile_all(include), globs.compile_all([*DEFAULT_EXCLUDES, *exclude])
    named = _literal(include)
    chosen: list[str] = []
    links: list[tuple[Path, str]] = []
    for base, dirs, files in os.walk(folder):
        here = Path(base)
        prefix = here.relative_to(folder).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        # a link to a folder is an entry of its own, never entered
        files += [d for d in dirs if (here / d).is_symlink()]
        dirs[:] = [
            d
            for d in dirs
            if not (here / d).is_symlink()
            and not globs.matches(exc, prefix + d)
            and not _pruned(ignored, named, prefix + d)
        ]
        for name in files:
            rel = prefix + name
            if globs.matches(exc, rel) or not globs.matches(inc, rel):
                continue
            if rel not in named and is_ignored(ignored, rel):
                continue
            path = here / name
            if path.is_symlink():
                links.append((path, rel))
            elif not path.is_file():
                continue
            _check_name(rel, folder, manifest)
            chosen.append(rel)
    chosen.sort()
    carried = set(chosen)
    for link, rel in links:
        _check_link(link, rel, folder, carried, manifest)
    return chosen


def _pruned(ignored: frozenset[str], named: frozenset[str], rel: str) -> bool:
    """A folder git ignores, with no file named by an include pattern below it."""
    return is_ignored(ignored, rel + "/") and not any(n.startswith(rel + "/") for n in named)


def _problem(folder: Path, manifest: Path | None, problem: str, fix: str) -> ConfigError:
    return ConfigError(manifest or folder, "include" if manifest else "", problem, fix)


def _check_name(rel: str, folder: Path, manifest: Path | None) -> None:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(rel).decode("utf-8", "backslashreplace")
        raise _problem(
            folder,
            manifest,
            f"{folder / shown}: the name is not UTF-8, which an image cannot carry",
            "rename the file (or exclude it)",
        ) from None


def _check_link(
    link: Path, rel: str, folder: Path, carried: set[str], manifest: Path | None
) -> None:
    target = str(link.readlink())
    try:
        top, resolved = folder.resolve(), link.resolve()
    except (RuntimeError, OSError):  # a loop of links (RuntimeError until Python 3.13)
        raise _problem(
            folder,
            manifest,
            f"{folder / rel} is a symlink to {target}, a loop of links that reaches no file: "
            "in the image it would dangle",
            "replace the link with the file it should name, or exclude it",
        ) from None
    inside = resolved.is_relative_to(top) and resolved != top
    points_at = resolved.relative_to(top).as_posix() if inside else ""
    held = points_at in carried or (
        inside and resolved.is_dir() and any(c.startswith(f"{points_at}/") for c in carried)
    )
    if Path(target).is_absolute() or not held:
        where = "a file the upload does not carry" if inside else f"outside {folder}"
        raise _problem(
            folder,
            manifest,
            f"{folder / rel} is a symlink to {target} ({where}): in the image it would dangle",
            "replace the link with a copy of the file, or point it (by a relative path) at a "
            "file inside the service folder that its include globs select, or exclude it",
        )


def source_files(service: Service, root: Path) -> list[str]:
    """The service folder's files its image carries (include/exclude globs, less what git
    ignores), folder-relative."""
    spec = service.spec
    return _walked(service, "sources", root, spec.include)


def test_files(service: Service, root: Path) -> list[str]:
    """The folder's files its unit tests see: everything but what ``exclude`` keeps out and
    what git ignores."""
    return _walked(service, "tests", root, ["**"])


def _walked(service: Service, kind: str, root: Path, include: Sequence[str]) -> list[str]:
    """The service folder's files that ``include`` (and its excludes) select, walked once
    per loaded project."""
    if kind not in service.walks:
        found = walk(
            service.path, root, include, service.spec.exclude, service.ignored, service.manifest
        )
        service.walks[kind] = tuple(found)
    return list(service.walks[kind])


def would_read(service: Service, root: Path) -> Callable[[str], bool]:
    """Whether the service's uploads would carry a path (root-relative) if it existed: what
    a deleted input is measured by."""
    folder = service.path.relative_to(root).as_posix()
    prefix = "" if folder == "." else f"{folder}/"
    spec = service.spec
    exc = globs.compile_all([*DEFAULT_EXCLUDES, *spec.exclude])
    inc = globs.compile_all(["**"] if spec.tests else spec.include)
    named = _literal(spec.include)

    def reads(path: str) -> bool:
        rel = path.removeprefix(prefix)
        if not path.startswith(prefix) or globs.matches(exc, rel):
            return False
        return globs.matches(inc, rel) and (rel in named or not is_ignored(service.ignored, rel))

    return reads


def parent_folders(names: Iterable[str]) -> list[str]:
    """Every folder that holds one of these folder-relative paths, the folder itself as ".":
    an upload keeps their modes too."""
    out = {"."}
    for name in names:
        parts = name.split("/")[:-1]
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(out)


def library_files(project: Project, library: Library) -> list[str]:
    """A workspace library's files that its build reads: its whole folder (as a package
    build takes it), less the default excludes and what git ignores; folder-relative."""
    rel = library.path.relative_to(project.root).as_posix()
    return walk(library.path, project.root, ["**"], (), ignored_below(project.ignored, rel))


def _library_files(
    project: Project, workspace_root: Path, libraries: Sequence[Library]
) -> dict[str, str]:
    """What building workspace libraries reads: the workspace's root pyproject (the builds
    find the workspace by it) and each library's folder."""
    root = project.root
    files = _files(root, [workspace_root / "pyproject.toml"])
    for library in libraries:
        read = library_files(project, library)
        files |= _files(root, [library.path / rel for rel in [*parent_folders(read), *read]])
    return files


def service_requirement_files(service: Service) -> list[Path]:
    """The service's own requirements file, and its lock file when it is a pyproject (not a
    workspace member's: its pins are taken from the workspace's lock by value)."""
    req = service.requirements
    if req is None:
        return []
    files = [req]
    if service.workspace is not None:
        return files
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
            "group": list(tier.pins),  # a workspace group's pins, by value: not the whole lock
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
            if settings.compression != "gzip":  # the blobs, so the digests, differ
                values["compression"] = settings.compression
        # The config file itself is an input of the root tier: an uncommitted edit to it makes
        # every image dirty.
        own = [project.config_file] if parent is None else []
        files = _files(project.root, [*own, *tier.requirements])
        if tier.libraries and tier.lock is not None:  # built from their folders
            files |= _library_files(project, tier.lock.parent, tier.libraries)
            values["libraries"] = {
                lib.name: lib.path.relative_to(project.root).as_posix() for lib in tier.libraries
            }
        out[name] = Inputs(f"tier:{name}", files, values, parent)
    return out


def service_inputs(project: Project, service: Service, tier: Inputs) -> Inputs:
    """A service's inputs: its manifest's values, its source and test files, its own and the
    project's test requirements, on top of its tier's."""
    root = project.root
    folder = service.path
    sources = source_files(service, root)
    tests = test_files(service, root) if service.spec.tests else []
    read = sorted({*sources, *tests})
    files = _files(
        root, [service.manifest, *(folder / rel for rel in [*parent_folders(read), *read])]
    )
    files |= _files(root, service_requirement_files(service))
    if service.spec.tests:
        files |= _files(root, project.test_requirements)
    values = {
        "spec": service.spec.model_dump(mode="json"),
        "folder": folder.relative_to(root).as_posix(),
        "sources": sources,  # which files the image holds, apart from what tests see
    }
    used = service.workspace
    if used is not None:
        files |= _library_files(project, used.root, used.libraries)
        # the pins by value, not the lock: a lock change that moves none of them changes nothing
        values["workspace"] = {
            "pins": list(used.pins),
            "libraries": {
                lib.name: lib.path.relative_to(root).as_posix() for lib in used.libraries
            },
        }
    return Inputs(f"service:{service.name}", files, values, tier)


def reads(project: Project, settings: BuildSettings) -> dict[str, set[str]]:
    """Every host file each service's image reads (root-relative), for ``--changed-since``."""
    tiers = tier_inputs(project, settings, settings.base_image)
    out = {}
    for name, svc in project.services.items():
        read = set(service_inputs(project, svc, tiers[svc.tier]).paths)
        if svc.workspace is not None:  # its pins are read out of the workspace's lock
            read.add(svc.workspace.lock.relative_to(project.root).as_posix())
        out[name] = read
    return out
