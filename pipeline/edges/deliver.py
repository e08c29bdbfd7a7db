"""Where a built image goes once it passed every check: its tarball, SBOM and provenance into
``--out`` (each whole or not at all), and its immutable tags and attestations to the
registry. The engine hands each image over (engine/runner.py's ``Deliver``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pipeline.core.delivery import Delivered
from pipeline.edges import publish
from pipeline.supply import kinds

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from pipeline.core.delivery import Built
    from pipeline.core.model import Project


@dataclass(frozen=True)
class Delivery:
    """One run's delivery: what it writes out and where it publishes."""

    project: Project
    out_dir: Path | None
    target: publish.Target | None

    def documents(self, built: Built, subject: str, digest: str) -> dict[kinds.Kind, str]:
        """Every artifact kind's document of the image, naming it as ``subject@digest``."""
        facts = kinds.Facts(self.project, built.job, subject, digest, built.installed or {})
        return {kind: kind.make(facts, built.started, time.time()) for kind in kinds.KINDS}

    async def __call__(self, built: Built, step: Callable[[str], None]) -> Delivered:
        name, staged = built.job.service.name, built.staged
        delivered = Delivered()
        if staged is None:  # nothing asked of the delivery: no tarball was made
            return delivered
        if self.out_dir is not None:
            for kind, text in self.documents(built, name, built.facts.digest).items():
                written = staged.with_name(f"document{kind.suffix}")
                written.write_text(text)
                written.chmod(0o644)
                written.replace(self.out_dir / f"{name}{kind.suffix}")
            staged.chmod(0o644)
            staged = staged.replace(self.out_dir / f"{name}.tar")  # whole or not at all
            sbom = str(self.out_dir / f"{name}{kinds.SBOM.suffix}")
            delivered = replace(delivered, tarball=str(staged), sbom=sbom)
        if self.target is not None:
            step("publish")
            pushed = await publish.push_immutable(staged, built.job, self.target)
            repository = self.target.repository(name)
            digest = pushed[0].rsplit("@", 1)[-1]
            step("attest")
            documents = self.documents(built, repository, digest)
            refs = await publish.attach(name, self.target, digest, documents)
            delivered = replace(delivered, published=pushed, attested=refs[kinds.PROVENANCE])
        return delivered
