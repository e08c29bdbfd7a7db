"""The hand-over between the engine and the edges: an image that passed its checks (``Built``)
goes to the run's ``Deliver``, which says where it went (``Delivered``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from pipeline.core.jobs import Job
    from pipeline.core.outcomes import ImageFacts


@dataclass(frozen=True)
class Built:
    """An image that passed every check asked of it, staged as an OCI tarball when the
    delivery takes one: what is delivered (written out, published, attested) by the run's
    ``Deliver``."""

    job: Job
    facts: ImageFacts
    # the tarball, in a staging folder of --out (or a temporary one); None when nothing is
    # written or pushed (the facts were read in the engine)
    staged: Path | None
    installed: dict[str, Any] | None  # what the image holds (its SBOM's facts), if asked
    started: float  # when its build started (epoch seconds)


@dataclass(frozen=True)
class Delivered:
    """Where a built image went."""

    tarball: str = ""
    sbom: str = ""
    published: tuple[str, ...] = ()  # references with digest, one per tag
    attested: str = ""  # the provenance artifact pushed beside the image


class Deliver(Protocol):
    """Takes a built image where the run sends it; names each step it enters (``step``), so
    that a failure says where it failed."""

    async def __call__(self, built: Built, step: Callable[[str], None]) -> Delivered: ...


async def keep_nothing(built: Built, step: Callable[[str], None]) -> Delivered:  # noqa: ARG001
    """The delivery of a run that only builds and checks."""
    return Delivered()
