"""The project as data: tiers in build order, services, and selections of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.core.config import ROOT_TIER
from pipeline.core.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

    from pipeline.core.config import ProjectSpec, ServiceSpec, TierSpec
    from pipeline.core.workspace import Library, Use


@dataclass(frozen=True)
class Tier:
    name: str
    spec: TierSpec
    requirements: tuple[Path, ...]
    # from the workspace (spec.group, spec.libraries, a member's pyproject among the
    # requirements): the lock and the pins it resolved
    lock: Path | None = None
    pins: tuple[str, ...] = ()
    libraries: tuple[Library, ...] = ()  # workspace libraries built into the tier
    members: tuple[Path, ...] = ()  # members' pyprojects named as requirements, taken as locked

    @property
    def image_name(self) -> str:
        return ROOT_TIER if self.name == ROOT_TIER else f"{self.name}-base"


@dataclass(frozen=True)
class Service:
    name: str
    path: Path
    manifest: Path
    spec: ServiceSpec
    requirements: Path | None
    # What git ignores in the folder (folder-relative; folders as "dir/"): never uploaded
    # unless an include pattern names the file itself.
    ignored: frozenset[str] = frozenset()
    # The folder's walks (its image's files, its unit tests' files), each made once per
    # loaded project: a run reads a folder once, however many steps ask for its files.
    walks: dict[str, tuple[str, ...]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )
    # A member of a uv workspace: its pins from the workspace's lock, its libraries
    workspace: Use | None = None

    @property
    def tier(self) -> str:
        return self.spec.tier


def chain(tiers: Mapping[str, Tier], tier: str) -> list[Tier]:
    """The tiers from the root down to ``tier`` (while a project loads, its tiers alone)."""
    out: list[Tier] = []
    name: str | None = tier
    while name is not None:
        out.append(tiers[name])
        name = tiers[name].spec.extends
    return out[::-1]


@dataclass(frozen=True)
class Project:
    root: Path
    config_file: Path
    spec: ProjectSpec
    tiers: dict[str, Tier]  # parents before children
    services: dict[str, Service]  # sorted by name
    test_requirements: tuple[Path, ...] = ()
    ignored: frozenset[str] = frozenset()  # what git ignores, root-relative ("dir/" folders)

    def chain(self, tier: str) -> list[Tier]:
        """The tiers from the root down to ``tier``."""
        return chain(self.tiers, tier)

    def affected(self, changed: Iterable[str], reads: Mapping[str, set[str]]) -> set[str]:
        """Services whose image a change to these files (relative to the root) can alter: a
        file the service's inputs name (``reads``: its sources, tests, requirements, its
        tiers' requirements, the config), or a file gone from its folder."""
        out = set()
        for svc in self.services.values():
            folder = svc.path.relative_to(self.root).as_posix() + "/"
            for path in changed:
                gone = path.startswith(folder) and not (self.root / path).exists()
                if path in reads[svc.name] or gone:
                    out.add(svc.name)
                    break
        return out

    def select(
        self,
        names: Iterable[str] = (),
        tiers: Iterable[str] = (),
        changed: Iterable[str] | None = None,
        reads: Mapping[str, set[str]] | None = None,
    ) -> list[Service]:
        """Services by name and tier; with ``changed`` (files since a commit), only those
        the change affects. An empty result is an error, except for a change that affects
        nothing, which is a normal outcome."""
        names, tiers = list(names), list(tiers)
        for name in names:
            if name not in self.services:
                known = ", ".join(self.services)
                raise UsageError(f"unknown service {name!r}; the services are: {known}")
        for tier in tiers:
            if tier not in self.tiers:
                known = ", ".join(self.tiers)
                raise UsageError(f"unknown tier {tier!r}; the tiers are: {known}")
        chosen = [
            s
            for s in self.services.values()
            if (not names or s.name in names) and (not tiers or s.tier in tiers)
        ]
        if changed is not None:
            touched = self.affected(changed, reads or {})
            return [s for s in chosen if s.name in touched]
        if not chosen:
            raise UsageError("the selection matches no service")
        return chosen
