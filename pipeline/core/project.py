"""The project's loader: the config and every service manifest read and checked, tiers in
build order, services found on disk. Reads files; never talks to git or the engine."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pipeline.core import tierpins, workspace
from pipeline.core.config import (
    MANIFEST,
    ROOT_TIER,
    ProjectSpec,
    TierSpec,
    load_project,
    load_service,
)
from pipeline.core.errors import ConfigError, UsageError
from pipeline.core.globs import ignored_below
from pipeline.core.inputs import source_files
from pipeline.core.model import Project, Service, Tier, chain
from pipeline.core.names import NAME_PATTERN


def _ordered_tiers(spec: ProjectSpec, root: Path, config_file: Path) -> dict[str, Tier]:
    field = "tool.pipeline.tiers" if config_file.name == "pyproject.toml" else "tiers"
    if ROOT_TIER not in spec.tiers:
        raise ConfigError(config_file, field, "has no 'base' tier", "add a [tiers.base] table")
    if spec.tiers[ROOT_TIER].extends is not None:
        raise ConfigError(
            config_file, f"{field}.base.extends", "the root tier extends nothing", "remove it"
        )
    ordered: dict[str, Tier] = {}

    def visit(name: str, seen: tuple[str, ...]) -> None:
        if name in ordered:
            return
        tier = spec.tiers[name]
        if name in seen:
            cycle = " -> ".join((*seen, name))
            raise ConfigError(config_file, f"{field}.{name}.extends", f"cycle {cycle}", "break it")
        if name != ROOT_TIER:
            parent = tier.extends
            if parent is None or parent not in spec.tiers:
                raise ConfigError(
                    config_file,
                    f"{field}.{name}.extends",
                    f"{'is missing' if parent is None else f'names unknown tier {parent!r}'}",
                    f"set extends to one of: {', '.join(t for t in spec.tiers if t != name)}",
                )
            visit(parent, (*seen, name))
        reqs = _existing(root, tier.requirements, config_file, f"{field}.{name}.requirements")
        lock, pins, libraries = _from_workspace(root, tier, config_file, f"{field}.{name}")
        kept, members, lock, pins, libraries = _members_locked(root, reqs, lock, pins, libraries)
        ordered[name] = Tier(name, tier, kept, lock, pins, libraries, members)

    for name in spec.tiers:
        visit(name, ())
    return ordered


def _from_workspace(
    root: Path, tier: TierSpec, config_file: Path, field: str
) -> tuple[Path | None, tuple[str, ...], tuple[workspace.Library, ...]]:
    """What a tier takes from the uv workspace: its lock, the pins of its dependency group and
    of its libraries' dependencies, and the libraries."""
    lock: Path | None = None
    pins: tuple[str, ...] = ()
    libraries: tuple[workspace.Library, ...] = ()
    if tier.group is not None:
        lock, pins = workspace.group_pins(root, tier.group, config_file, f"{field}.group")
    if tier.libraries:
        lock, libraries, more = workspace.tier_libraries(
            root, tier.libraries, config_file, f"{field}.libraries"
        )
        pins = tuple(sorted({*pins, *more}))
    return lock, pins, libraries


def _members_locked(
    root: Path,
    reqs: tuple[Path, ...],
    lock: Path | None,
    pins: tuple[str, ...],
    libraries: tuple[workspace.Library, ...],
) -> tuple[
    tuple[Path, ...], tuple[Path, ...], Path | None, tuple[str, ...], tuple[workspace.Library, ...]
]:
    """A tier's requirements files kept as they are, and the pyprojects of uv workspace
    members among them, each taken from the workspace's lock as an app's is: the member's
    dependencies as the lock pins them (their closure), and the workspace libraries among
    them, not the member itself. Resolved when the tier is built instead, a range there would
    take the index's newest release, which the apps' locked pins may contradict."""
    kept: list[Path] = []
    members: list[Path] = []
    for path in reqs:
        used = workspace.use(path, root) if path.name == workspace.PYPROJECT else None
        if used is None:
            kept.append(path)
            continue
        members.append(path)
        lock = used.lock
        pins = tuple(sorted({*pins, *used.pins}))
        named = {library.name for library in libraries}
        more = [lib for lib in used.libraries if lib.name not in {used.package, *named}]
        libraries = (*libraries, *more)
    return tuple(kept), tuple(members), lock, pins, libraries


def _inside(root: Path, rel: str, file: Path, field: str) -> Path:
    """``rel`` under ``root``; an absolute path or one leading out of the project is an error
    (a build must read nothing the project does not hold)."""
    try:
        path = (root / rel).resolve()
    except (RuntimeError, OSError):  # a loop of links (RuntimeError until Python 3.13)
        raise ConfigError(
            file,
            field,
            f"{rel} is a symlink in a loop of links that reaches no file",
            "replace the link with the file it should name",
        ) from None
    if Path(rel).is_absolute() or not path.is_relative_to(root):
        raise ConfigError(
            file,
            field,
            f"{rel} is outside the project ({root})",
            "use a path relative to the project root, inside it",
        )
    return path


def _existing(root: Path, files: list[str], config_file: Path, field: str) -> tuple[Path, ...]:
    for i, rel in enumerate(files):
        _inside(root, rel, config_file, f"{field}[{i}]")
        if not (root / rel).is_file():
            raise ConfigError(
                config_file,
                f"{field}[{i}]",
                f"{rel} does not exist",
                "create the file or correct the path (relative to the project root)",
            )
    return tuple(root / rel for rel in files)


def _service(
    manifest: Path, tiers: dict[str, Tier], root: Path, ignored: frozenset[str]
) -> Service:
    spec = load_service(manifest)
    folder = manifest.parent
    name = spec.name or folder.name
    if not re.fullmatch(NAME_PATTERN, name):
        raise ConfigError(
            manifest,
            "name",
            f"the folder name {name!r} is not a valid image name (lower case letters, digits "
            "and '-', starting with a letter)",
            'set name = "<a valid name>" in the manifest, or rename the folder',
        )
    if spec.tier not in tiers:
        raise ConfigError(
            manifest,
            "tier",
            f"unknown tier {spec.tier!r}",
            f"use one of: {', '.join(tiers)}",
        )
    requirements = None
    if spec.requirements is not None:
        requirements = _inside(
            root, f"{folder.relative_to(root)}/{spec.requirements}", manifest, "requirements"
        )
        if not requirements.is_file():
            raise ConfigError(
                manifest,
                "requirements",
                f"{spec.requirements} does not exist in {folder.name}/",
                "create it, or remove the field to use only the tier's dependencies",
            )
        if requirements.name != "pyproject.toml" and requirements.suffix != ".txt":
            raise ConfigError(
                manifest,
                "requirements",
                "must be a requirements .txt file or a pyproject.toml",
                "point it at requirements.txt or pyproject.toml",
            )
    own = ignored_below(ignored, folder.relative_to(root).as_posix())
    provided = {lib.name for t in chain(tiers, spec.tier) for lib in t.libraries}
    used = _workspace_use(name, requirements, root, provided)
    service = Service(name, folder, manifest, spec, requirements, own, workspace=used)
    if not source_files(service, root):
        raise ConfigError(
            manifest,
            "include",
            f"matches no file in {folder.relative_to(root)}/ ({', '.join(spec.include)})",
            'correct the globs (relative to the service folder, e.g. "app/**")',
        )
    return service


def _workspace_use(
    name: str, requirements: Path | None, root: Path, provided: set[str]
) -> workspace.Use | None:
    """What the service takes from the uv workspace its pyproject is a member of, if any;
    the libraries its tiers already hold (``provided``) are not installed again."""
    if requirements is None or requirements.name != "pyproject.toml":
        return None
    used = workspace.use(requirements, root)
    if used is None:
        return None
    own = tuple(lib for lib in used.libraries if lib.name not in provided)
    used = dataclasses.replace(used, libraries=own)
    for library in used.libraries:
        if not library.path.is_relative_to(root):
            raise ConfigError(
                used.lock,
                "",
                f"{name} uses the workspace library {library.name} at {library.path}, "
                f"outside the project ({root})",
                "keep the workspace's members inside the folder holding the pipeline config",
            )
    return used


def manifest_glob(pattern: str) -> str:
    """The manifests a ``services`` glob of the config names."""
    return f"{pattern.rstrip('/')}/{MANIFEST}"


def load(root: Path, ignored: frozenset[str]) -> Project:
    """Read and check the whole project under ``root``; ``ignored``: what git ignores there
    (root-relative, folders as "dir/"), never uploaded."""
    root = root.resolve()
    if not root.is_dir():
        raise UsageError(
            f"the project root {root} is not a directory; fix: name the monorepo's root folder"
        )
    spec, config_file = load_project(root)
    tiers = _ordered_tiers(spec, root, config_file)
    services: dict[str, Service] = {}
    field = "tool.pipeline.services" if config_file.name == "pyproject.toml" else "services"
    for i, pattern in enumerate(spec.services):
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise ConfigError(
                config_file,
                f"{field}[{i}]",
                f"{pattern} reaches outside the project",
                'use globs relative to the project root, e.g. "services/*"',
            )
        for manifest in sorted(root.glob(manifest_glob(pattern))):
            svc = _service(manifest, tiers, root, ignored)
            if svc.name in services:
                other = services[svc.name].manifest.relative_to(root)
                raise ConfigError(
                    manifest,
                    "name",
                    f"service name {svc.name!r} is already used by {other}",
                    "give one of them another name = ...",
                )
            services[svc.name] = svc
    if not services:
        raise ConfigError(
            config_file,
            "services",
            f"no {MANIFEST} found under {', '.join(spec.services)}",
            f"point the globs at service folders, or add a {MANIFEST} to each service",
        )
    prefix = "tool.pipeline." if config_file.name == "pyproject.toml" else ""
    tests = _existing(root, spec.test_requirements, config_file, f"{prefix}test_requirements")
    ordered = dict(sorted(services.items()))
    project = Project(root, config_file, spec, tiers, ordered, tests, ignored)
    tierpins.check_files(project)
    tierpins.check(project, list(project.services.values()))
    return project
