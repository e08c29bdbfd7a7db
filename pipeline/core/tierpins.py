"""A service's requirements against the pins of its tiers, before any build.

A tier's installed set constrains every service in it (services install with the tier's
frozen set as constraints), so a service asking for another version of a package a tier
pins can never build. The files say so without an engine: each exact pin (``name==x``) of
the tier chain's requirement files against the service's own requirement specifiers.
What only a resolver knows (a pin the tier pulls in transitively) is reported when the
service's install fails, naming the tier the same way.

Every requirement file must also say everything itself, in UTF-8: a nested ``-r`` or ``-c``
would read a file that is neither uploaded nor checked here, so it is refused.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pipeline.core.errors import ConfigError
from pipeline.core.locate import read_toml

if TYPE_CHECKING:
    from pathlib import Path

    from packaging.requirements import Requirement

    from pipeline.core.model import Project, Service

# A requirement's project name, as PEP 508 starts it; enough to find the names two files share.
_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def canonicalize_name(name: str) -> str:
    """PEP 503's normalised name (as packaging.utils.canonicalize_name)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# Options that make a requirements file read another file: uv would follow them, but the
# build uploads only the files the config names, and the pin check reads only those.
_INCLUDE = re.compile(r"^(?:-[rc]|--requirement\b|--constraint\b)")


def _names(path: Path) -> set[str]:
    return {canonicalize_name(m[1]) for line in _lines(path) if (m := _NAME.match(line))}


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            path, "", f"is not UTF-8 text (byte {exc.start})", "save the file as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(
            path, "", f"cannot be read ({exc.strerror})", "check the file and its permissions"
        ) from None


def _lines(path: Path) -> list[str]:
    if path.name == "pyproject.toml":
        project = read_toml(path).get("project")
        deps = project.get("dependencies") if isinstance(project, dict) else None
        return [str(d) for d in deps] if isinstance(deps, list) else []
    out = []
    for raw in _text(path).splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):  # options (--index-url, ...) skipped
            out.append(line)
    return out


def _refuse_includes(path: Path, fix: str) -> None:
    if path.name == "pyproject.toml":
        _lines(path)  # TOML in UTF-8: read_toml says what is wrong
        return
    for number, raw in enumerate(_text(path).splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if _INCLUDE.match(line):
            raise ConfigError(
                path,
                f"line {number}",
                f"{line!r} reads another file, which the build neither uploads nor checks "
                "against the tiers' pins",
                fix,
            )


def check_files(project: Project) -> None:
    """Every requirement file the config and manifests name reads as UTF-8 text and names
    its requirements itself: a nested -r or -c is refused, naming the file and line."""
    config = project.config_file.name
    prefix = "tool.pipeline." if config == "pyproject.toml" else ""
    copy = "copy the requirements it names into this file"
    for tier in project.tiers.values():
        field = f"{prefix}tiers.{tier.name}.requirements"
        for path in tier.requirements:
            _refuse_includes(path, f"{copy}, or list that file in {field} of {config}")
    for path in project.test_requirements:
        _refuse_includes(
            path, f"{copy}, or list that file in {prefix}test_requirements of {config}"
        )
    for service in project.services.values():
        if service.requirements is not None:
            _refuse_includes(service.requirements, f"{copy} (a service names one file)")


def requirements(path: Path) -> list[Requirement]:
    """The requirements a file names; lines that are no requirement (URLs, paths) skipped:
    uv judges those when it installs."""
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for line in _lines(path):
        try:
            out.append(Requirement(line))
        except InvalidRequirement:
            continue
    return out


def _exact(req: Requirement) -> str | None:
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
        return specs[0].version
    return None


def tier_pins(project: Project, tier: str) -> dict[str, tuple[str, str, Path]]:
    """Exact pins of a tier and its parents: package -> (version, tier, file)."""
    pins: dict[str, tuple[str, str, Path]] = {}
    from packaging.requirements import Requirement

    for link in project.chain(tier):
        named = [(path, req) for path in link.requirements for req in requirements(path)]
        if link.lock is not None:  # a workspace group: its pins are the lock's
            named += [(link.lock, Requirement(line)) for line in link.pins]
        for path, req in named:
            version = _exact(req)
            if version is not None and req.marker is None:
                pins[canonicalize_name(req.name)] = (version, link.name, path)
    return pins


def check(project: Project, services: list[Service]) -> None:
    """Raise a ConfigError for the first service requirement no tier pin satisfies. Only a
    service naming a package its tiers' files also name is read closely (with packaging)."""
    for service in services:
        if service.requirements is None:
            continue
        chain = project.chain(service.tier)
        tier_files = [p for link in chain for p in link.requirements]
        named = set().union(*map(_names, tier_files))
        named |= {
            canonicalize_name(m[1])
            for link in chain
            for pin in link.pins
            if (m := _NAME.match(pin))
        }
        if not _names(service.requirements) & named:
            continue
        pins = tier_pins(project, service.tier)
        for req in requirements(service.requirements):
            pinned = pins.get(canonicalize_name(req.name))
            if pinned is None or req.marker is not None:
                continue
            version, tier, path = pinned
            if req.specifier.contains(version, prereleases=True):
                continue
            via = "" if tier == service.tier else f" (through tier {service.tier!r})"
            raise ConfigError(
                service.requirements,
                req.name,
                f"service {service.name!r} asks for {req}, but tier {tier!r}{via} pins "
                f"{req.name}=={version} in {path.relative_to(project.root)}, and a tier's "
                "installed set constrains every service in it",
                f"accept {req.name}=={version} here, loosen the pin in "
                f"{path.relative_to(project.root)}, or move {req.name} out of the tier into "
                "the services that need it",
            )
