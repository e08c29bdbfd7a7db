"""Publishing as one release: every image goes out under its immutable tags as soon as it has
passed its checks; the moving tags (branch-*, latest) move only when every selected service
passed every check and every push succeeded. A failure part-way leaves every moving tag where
it was. Pushes that fail for a passing reason (5xx, 429, a dropped connection) are retried
with backoff; the registry's refusals are explained with the fix.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import anyio
import dagger

from pipeline.errors import BuildError
from pipeline.log import get_logger
from pipeline.provenance import immutable_tags, moving_tags

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pipeline.jobs import Job
    from pipeline.report import Result
    from pipeline.settings import RunOptions

# Seconds to wait before each retry; the engine itself retries a few times within a push.
BACKOFF = (1.0, 3.0)
_TRANSIENT = re.compile(
    r"\b(5\d\d [A-Z]|429 )|\bEOF\b|connection reset|connection refused|broken pipe"
    r"|i/o timeout|TLS handshake timeout|server misbehaving",
    re.IGNORECASE,
)
_STATUS = re.compile(r"\b(401 Unauthorized|403 Forbidden|404 Not Found)")


@dataclass(frozen=True)
class Target:
    """Where and as whom one run publishes."""

    prefix: str  # registry/namespace, e.g. ghcr.io/acme
    username: str | None
    password: dagger.Secret | None

    @property
    def registry(self) -> str:
        return self.prefix.split("/", 1)[0]

    def repository(self, service: str) -> str:
        return f"{self.prefix.rstrip('/')}/{service}"

    def authorized(self, image: dagger.Container) -> dagger.Container:
        if self.username and self.password is not None:
            return image.with_registry_auth(self.registry, self.username, self.password)
        return image

    def explain(self, message: str) -> str:
        """The registry's refusal as the user can act on it."""
        who = f"user {self.username!r}" if self.username else "an anonymous client"
        status = _STATUS.search(message)
        if status is None:
            return message
        fixes = {
            "401 Unauthorized": (
                "set PIPELINE_REGISTRY_USERNAME (or --registry-username) and "
                "PIPELINE_REGISTRY_PASSWORD to an account or token allowed to push "
                "(on GHCR: a token with write:packages)"
            ),
            "403 Forbidden": f"give {who} push rights to {self.prefix}",
            "404 Not Found": f"check that {self.prefix} names an existing namespace",
        }
        return (
            f"registry {self.registry} refused {who} ({status[1]}); fix: {fixes[status[1]]}\n"
            f"{message}"
        )


async def _push(image: dagger.Container, ref: str, target: Target) -> str:
    """Push under one tag, retrying passing failures; returns the reference with digest."""
    for attempt, delay in enumerate((*BACKOFF, None), start=1):
        try:
            return await target.authorized(image).publish(ref)
        except dagger.QueryError as exc:
            message = str(exc).strip()
            if delay is None or not _TRANSIENT.search(message):
                detail = target.explain(message)
                if delay is None:
                    detail = f"{ref}: gave up after {attempt} attempts\n{detail}"
                raise BuildError(ref, "publish", detail) from exc
            get_logger().warning(
                "push_retried", ref=ref, attempt=attempt, wait=delay, error=message
            )
            await anyio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


async def push_immutable(image: dagger.Container, job: Job, target: Target) -> tuple[str, ...]:
    """The image under its immutable tags (the commit, the version), one after the other so
    that all carry one digest; returns references with that digest."""
    repo = target.repository(job.service.name)
    return tuple([await _push(image, f"{repo}:{tag}", target) for tag in immutable_tags(job.stamp)])


@dataclass(frozen=True)
class Release:
    """What happened to the moving tags of one publish."""

    moved: tuple[str, ...] = ()  # references now pointing at this run's images
    held: tuple[str, ...] = ()  # references left where they were
    reason: str = ""  # why some were held

    @property
    def complete(self) -> bool:
        return not self.held

    def summary(self) -> str:
        if not self.moved and not self.held:
            return "release: no moving tags (a dirty build, or no commit)"
        if self.complete:
            return f"release: moving tags moved: {', '.join(self.moved)}"
        moved = f"; moved before the failure: {', '.join(self.moved)}" if self.moved else ""
        return (
            f"release: moving tags left where they were ({self.reason}): "
            f"{', '.join(self.held)}{moved}"
        )

    def as_dict(self) -> dict[str, object]:
        return {"moved": list(self.moved), "held": list(self.held), "reason": self.reason}


async def move_tags(
    results: Sequence[Result],
    jobs: Sequence[Job],
    images: dict[str, dagger.Container],
    target: Target,
) -> tuple[list[Result], Release]:
    """Move the moving tags of every service, only if every service passed and pushed."""
    wanted = {
        job.service.name: [
            f"{target.repository(job.service.name)}:{t}" for t in moving_tags(job.stamp)
        ]
        for job in jobs
    }
    every = tuple(ref for refs in wanted.values() for ref in refs)
    failed = [r.service for r in results if not r.ok]
    if failed:
        reason = f"{', '.join(failed)} failed"
        get_logger().warning("moving_tags_held", reason=reason, tags=list(every))
        return list(results), Release(held=every, reason=reason)
    moved: dict[str, list[str]] = {name: [] for name in wanted}
    errors: list[str] = []

    async def move(result: Result) -> None:
        image = images[result.service]
        digest = result.published[0].rsplit("@", 1)[-1] if result.published else ""
        for ref in wanted[result.service]:
            try:
                pushed = await _push(image, ref, target)
            except BuildError as exc:
                errors.append(f"{ref}: {exc.detail.splitlines()[0]}")
                return
            if digest and not pushed.endswith(digest):  # the engine exports one image alike
                errors.append(f"{ref}: pushed {pushed}, not the tested {digest}")
                return
            moved[result.service].append(pushed)

    async with anyio.create_task_group() as tg:
        for result in results:
            tg.start_soon(move, result)
    out = [replace(r, published=(*r.published, *moved[r.service])) for r in results]
    done = tuple(ref for refs in moved.values() for ref in refs)
    held = tuple(ref for ref in every if not any(m.startswith(f"{ref}@") for m in done))
    return out, Release(done, held, "; ".join(errors))


SBOM_TYPE = "application/vnd.cyclonedx+json"
PROVENANCE_TYPE = "application/vnd.in-toto+json"


async def attach(target: Target, repository: str, digest: str, sbom: str, provenance: str) -> str:
    """The image's SBOM and provenance pushed as artifacts referring to it (referrers API, or
    the tag fallback); returns the provenance artifact's reference."""
    from pipeline import referrers
    from pipeline.attest import SLSA_PROVENANCE
    from pipeline.settings import PASSWORD_ENV

    registry, _, path = repository.partition("/")

    def push() -> str:
        client = referrers.Client(registry, target.username, os.environ.get(PASSWORD_ENV))
        client.attach(path, digest, SBOM_TYPE, sbom.encode(), SBOM_TYPE)
        annotations = {"in-toto.io/predicate-type": SLSA_PROVENANCE}
        payload = provenance.encode()
        return client.attach(path, digest, PROVENANCE_TYPE, payload, PROVENANCE_TYPE, annotations)

    try:
        return f"{repository}@{await anyio.to_thread.run_sync(push)}"
    except referrers.RegistryError as exc:
        raise BuildError(repository, "attest", target.explain(str(exc))) from exc


def target_for(options: RunOptions, password: dagger.Secret | None) -> Target | None:
    if options.publish_to is None:
        return None
    return Target(options.publish_to, options.registry_username, password)
