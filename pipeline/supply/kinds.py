"""The kinds of artifact that travel with an image: each says how its document is made, what
it is called beside the tarball and in the registry, how to check that a document found
there is about a given image, and how ``verify`` describes it. Adding a kind is adding an
entry to ``KINDS``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.supply import attest, sbom

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from pipeline.core.jobs import Job
    from pipeline.core.model import Project


@dataclass(frozen=True)
class Facts:
    """What every kind's document of one image is made of."""

    project: Project
    job: Job
    subject: str  # the image's name: a service in --out, a repository in the registry
    digest: str  # the image's manifest digest
    installed: dict[str, Any]  # what the image holds (engine/inventory.py)


@dataclass(frozen=True, eq=False)
class Kind:
    name: str  # as messages say it
    media_type: str  # the artifact's type, and its document's, in the registry
    suffix: str  # the document's file name beside the image's tarball: <service><suffix>
    make: Callable[[Facts, float, float], str]  # the document, given build start and end
    problem: Callable[[dict[str, Any], str, str], str | None]  # (document, artifact, digest)
    describe: Callable[[dict[str, Any]], list[str]]  # what verify says of it
    annotations: Mapping[str, str] = field(default_factory=dict)


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def _make_sbom(facts: Facts, started: float, finished: float) -> str:  # noqa: ARG001
    used = facts.job.service.workspace
    members = (
        {lib.name: lib.path.relative_to(used.root).as_posix() for lib in used.libraries}
        if used
        else {}
    )
    return sbom.document(facts.job.stamp, facts.digest, facts.installed, members)


def _make_provenance(facts: Facts, started: float, finished: float) -> str:
    job = facts.job
    return _json(
        attest.statement(facts.project, job, facts.subject, facts.digest, started, finished)
    )


SBOM = Kind(
    name="SBOM",
    media_type=sbom.MEDIA_TYPE,
    suffix=".cdx.json",
    make=_make_sbom,
    problem=sbom.problem,
    describe=sbom.describe,
)
PROVENANCE = Kind(
    name="provenance",
    media_type=attest.MEDIA_TYPE,
    suffix=".provenance.json",
    make=_make_provenance,
    problem=attest.problem,
    describe=attest.describe,
    annotations={"in-toto.io/predicate-type": attest.SLSA_PROVENANCE},
)
# In the order they are written, pushed and described.
KINDS = (SBOM, PROVENANCE)


def by_media_type(media_type: object) -> Kind | None:
    return next((k for k in KINDS if k.media_type == media_type), None)
