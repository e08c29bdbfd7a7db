"""A service that is a member of a uv workspace: the workspace's one ``uv.lock`` pins its
third-party packages, and the workspace libraries it depends on (directly or through another
library) go into its image as built packages.

Read on the host from the lock itself, the way ``uv export --frozen --package SERVICE
--no-emit-workspace --no-dev`` would: the service's dependency closure, each package's
environment markers carried along the path that reaches it, extras followed. So the pins are
an input of the image by value: a lock change that moves none of a service's pins does not
rebuild it, and one that moves a pin rebuilds exactly the services that take it.

A tier may take from the workspace too: a dependency group of the root pyproject
(``group_pins``), or libraries built into the tier's layer with their pins
(``tier_libraries``); the services above it then install only what their tiers lack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import ConfigError
from pipeline.core.locate import read_toml

if TYPE_CHECKING:
    from collections.abc import Sequence

LOCK = "uv.lock"
PYPROJECT = "pyproject.toml"
MAX_PATHS = 16  # marker alternatives kept per package before the marker is dropped


@dataclass(frozen=True)
class Library:
    name: str  # the package's normalised name, as the lock has it
    path: Path  # its folder


@dataclass(frozen=True)
class Use:
    """What one service takes from its workspace."""

    root: Path  # the workspace's root folder (the pyproject with [tool.uv.workspace])
    lock: Path
    package: str  # the service's own package name
    # the workspace members it depends on, by name, then itself when it is a package
    libraries: tuple[Library, ...]
    pins: tuple[str, ...]  # third-party requirements, one line each, sorted

    def pins_text(self) -> str:
        return requirements_text(self.pins)


def requirements_text(pins: Sequence[str]) -> str:
    """Pins as a requirements file: one a line."""
    return "".join(f"{line}\n" for line in pins)


def normalise(name: str) -> str:
    """A distribution name as the lock spells it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def find_root(member: Path, stop: Path) -> Path | None:
    """The nearest folder from ``member`` up to ``stop`` whose pyproject declares a uv
    workspace, None when there is none."""
    for folder in (member, *member.parents):
        pyproject = folder / PYPROJECT
        if pyproject.is_file() and "workspace" in read_toml(pyproject).get("tool", {}).get(
            "uv", {}
        ):
            return folder
        if folder == stop:
            return None
    return None


def use(pyproject: Path, stop: Path) -> Use | None:
    """The workspace use of the service whose manifest names ``pyproject``; None when the
    service is in no uv workspace (its own lock beside it is then read, as before)."""
    root = find_root(pyproject.parent, stop)
    if root is None:
        return None
    lock = root / LOCK
    if not lock.is_file():
        raise ConfigError(
            root / PYPROJECT,
            "tool.uv.workspace",
            f"declares a uv workspace but {LOCK} is missing beside it",
            f"run `uv lock` in {root}",
        )
    project = read_toml(pyproject).get("project", {})
    name = project.get("name")
    if not isinstance(name, str):
        raise ConfigError(pyproject, "project.name", "is missing", "name the service's package")
    return _from_lock(root, lock, normalise(name))


def _read_lock(lock: Path) -> tuple[dict[str, list[dict[str, Any]]], set[str]]:
    """The lock's packages by name (a name may have several versions), and its members."""
    data = read_toml(lock)
    packages: dict[str, list[dict[str, Any]]] = {}
    for entry in data.get("package", []):
        packages.setdefault(normalise(str(entry.get("name", ""))), []).append(entry)
    return packages, {normalise(m) for m in data.get("manifest", {}).get("members", [])}


def group_pins(root: Path, group: str, config: Path, field: str) -> tuple[Path, tuple[str, ...]]:
    """A tier from the workspace: the lock, and the pins of the root project's dependency
    group ``group`` (``[dependency-groups]`` of the root pyproject), as the lock resolved it."""
    workspace_root = find_root(root, root)
    if workspace_root is None:
        raise ConfigError(
            config,
            field,
            f"names the dependency group {group!r}, but {root} is no uv workspace",
            f"declare [tool.uv.workspace] in {root / PYPROJECT}, or give the tier requirements",
        )
    lock = workspace_root / LOCK
    if not lock.is_file():
        raise ConfigError(
            config,
            field,
            f"takes its pins from the workspace's lock, but {LOCK} is missing beside "
            f"{workspace_root / PYPROJECT}",
            f"run `uv lock` in {root}",
        )
    packages, members = _read_lock(lock)
    name = read_toml(workspace_root / PYPROJECT).get("project", {}).get("name")
    entries = packages.get(normalise(name)) if isinstance(name, str) else None
    groups = entries[0].get("dev-dependencies", {}) if entries else {}
    if group not in groups:
        raise ConfigError(
            config,
            field,
            f"names the dependency group {group!r}, which {lock.name} does not hold",
            f"add it to [dependency-groups] of {workspace_root / PYPROJECT} and run `uv lock`",
        )
    start = {"name": f"group {group}", "version": "", "dependencies": groups[group]}
    found, reached = _closure(packages, start, lock, workspace_root)
    pins = []
    for (dep, version), entry in sorted(found.items()):
        if (dep, version) == (normalise(start["name"]), ""):
            continue
        if dep in members:
            raise ConfigError(
                config,
                field,
                f"the group {group!r} takes the workspace member {dep}",
                "a tier holds third-party packages; list the library in the apps that use it",
            )
        pins.append(
            _pin(dep, version, entry.get("source", {}), reached[(dep, version)], lock, root)
        )
    return lock, tuple(sorted(pins))


def tier_libraries(
    root: Path, names: Sequence[str], config: Path, field: str
) -> tuple[Path, tuple[Library, ...], tuple[str, ...]]:
    """A tier's workspace libraries: the lock, the libraries with the members they depend on
    (each once, dependencies first), and their third-party pins as the lock resolved them."""
    workspace_root = find_root(root, root)
    lock = workspace_root / LOCK if workspace_root else None
    if workspace_root is None or lock is None or not lock.is_file():
        raise ConfigError(
            config,
            field,
            f"names workspace libraries, but {root} holds no uv workspace with its {LOCK}",
            f"declare [tool.uv.workspace] in {root / PYPROJECT} and run `uv lock`",
        )
    _, members = _read_lock(lock)
    libraries: dict[str, Library] = {}
    pins: set[str] = set()
    for name in names:
        if normalise(name) not in members:
            raise ConfigError(
                config,
                field,
                f"names {name!r}, which is no member of the workspace's {LOCK}",
                f"name one of: {', '.join(sorted(members))}",
            )
        used = _from_lock(workspace_root, lock, normalise(name))
        for library in used.libraries:
            libraries.setdefault(library.name, library)
        pins.update(used.pins)
    return lock, tuple(libraries.values()), tuple(sorted(pins))


def _from_lock(root: Path, lock: Path, package: str) -> Use:
    packages, members = _read_lock(lock)
    if package not in packages or package not in members:
        raise ConfigError(
            lock,
            "",
            f"has no workspace member {package!r} (it is older than the member's pyproject)",
            f"run `uv lock` in {root}",
        )

    entries, reached = _closure(packages, packages[package][0], lock, root)
    libraries, pins = [], []
    own = None
    for (name, version), entry in sorted(entries.items()):
        source = entry.get("source", {})
        if name == package:
            # a service that is a package itself (it has a build system: the lock says
            # editable) is installed too, last, so its entry points are in the image
            if "editable" in source or "directory" in source:
                folder = source.get("editable") or source.get("directory")
                own = Library(name, (root / str(folder)).resolve())
            continue
        if name in members:
            folder = source.get("editable") or source.get("directory") or source.get("virtual")
            libraries.append(Library(name, (root / str(folder)).resolve()))
            continue
        pins.append(_pin(name, version, source, reached[(name, version)], lock, root))
    return Use(root, lock, package, (*libraries, *([own] if own else [])), tuple(sorted(pins)))


Key = tuple[str, str]  # a package's name and version


def _closure(
    packages: dict[str, list[dict[str, Any]]], start: dict[str, Any], lock: Path, root: Path
) -> tuple[dict[Key, dict[str, Any]], dict[Key, set[tuple[str, ...]]]]:
    """Every package the lock entry ``start`` depends on (itself included), and the ways each
    is reached, each the markers along one path (all of which must hold); () is a way with
    none: it is always installed."""

    def find(dep: dict[str, Any]) -> dict[str, Any]:
        name = normalise(str(dep["name"]))
        found = packages.get(name, [])
        if "version" in dep:
            found = [p for p in found if p.get("version") == dep["version"]] or found
        if not found:
            raise ConfigError(
                lock, "", f"names {name!r} but holds no such package", f"run `uv lock` in {root}"
            )
        return found[0]

    reached: dict[Key, set[tuple[str, ...]]] = {}
    entries: dict[Key, dict[str, Any]] = {}
    visited: set[tuple[Key, tuple[str, ...], tuple[str, ...]]] = set()
    todo: list[tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]] = [(start, (), ())]
    while todo:
        entry, path, extras = todo.pop()
        key = (normalise(str(entry["name"])), str(entry.get("version", "")))
        if (key, path, extras) in visited:
            continue
        visited.add((key, path, extras))
        entries[key] = entry
        ways = reached.setdefault(key, set())
        ways.add(path)
        if len(ways) > MAX_PATHS:  # too many ways to say: installed wherever it is reached
            ways.clear()
            ways.add(())
        deps = list(entry.get("dependencies", []))
        for extra in extras:
            deps += entry.get("optional-dependencies", {}).get(extra, [])
        for dep in deps:
            marker = dep.get("marker")
            step = tuple(sorted({*path, str(marker)})) if marker else path
            todo.append((find(dep), step, tuple(sorted(dep.get("extra", ())))))
    return entries, reached


def _pin(
    name: str,
    version: str,
    source: dict[str, Any],
    ways: set[tuple[str, ...]],
    lock: Path,
    root: Path,
) -> str:
    if "registry" in source:
        line = f"{name}=={version}"
    elif "git" in source:
        url, _, commit = str(source["git"]).partition("#")
        line = f"{name} @ git+{url.split('?', 1)[0]}@{commit}"
    elif "url" in source:
        line = f"{name} @ {source['url']}"
    else:
        raise ConfigError(
            lock,
            "",
            f"pins {name} {version} from a local path ({source}), outside the workspace's members",
            f"make it a workspace member (tool.uv.workspace.members in {root / PYPROJECT}) or "
            "take it from an index",
        )
    if () in ways or not ways:
        return line
    alternatives = sorted(" and ".join(f"({m})" for m in way) for way in ways)
    marker = (
        alternatives[0] if len(alternatives) == 1 else " or ".join(f"({a})" for a in alternatives)
    )
    return f"{line} ; {marker}"


def python_files(requirements: Path | None, used: Use | None) -> list[Path]:
    """The pyprojects whose ``requires-python`` an image's Python must meet: the service's
    own, and each workspace package it installs."""
    files = [requirements] if requirements is not None and requirements.name == PYPROJECT else []
    files += [lib.path / PYPROJECT for lib in used.libraries] if used else []
    return list(dict.fromkeys(files))


def check_python(files: Sequence[Path], version: str, image: str) -> None:
    """A ConfigError for the first pyproject whose ``requires-python`` the base image's
    Python (``version``, e.g. 3.11.2) does not meet."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    for path in files:
        wanted = read_toml(path).get("project", {}).get("requires-python")
        if not isinstance(wanted, str):
            continue
        try:
            allowed = SpecifierSet(wanted)
        except InvalidSpecifier:
            raise ConfigError(
                path,
                "project.requires-python",
                f"{wanted!r} is no version specifier",
                'write it as uv and pip read it, e.g. ">=3.11"',
            ) from None
        if not allowed.contains(version, prereleases=True):
            raise ConfigError(
                path,
                "project.requires-python",
                f"is {wanted!r}, but the base image {image} has Python {version}",
                "build from a base image whose Python it allows (--base-image), or widen "
                "requires-python",
            )
