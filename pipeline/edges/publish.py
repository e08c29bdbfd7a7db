"""Publishing as one release: every image goes out under its immutable tags as soon as it has
passed its checks; the moving tags (branch-*, latest) move only when every selected service
passed every check and every push succeeded. A failure part-way leaves every moving tag where
it was. Pushes that fail for a passing reason (5xx, 429, a dropped connection) are retried
with backoff; the registry's refusals are explained with the fix.

The moving tags move by the registry's API, not by pushing again: where each points is read
first (its manifest, or its absence), then each is pointed at the tested manifest, copied by
digest from the commit tag, the tags that exist first (a registry may not let a new tag be
deleted again), several requests at a time. Any failure (or an interruption) part-way
puts every tag already touched back: the manifest it named is stored under it again, and one
that did not exist is deleted where the registry allows it; what could not be put back is
named in the release.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from pipeline.core.errors import BuildError
from pipeline.core.log import get_logger
from pipeline.edges.registry import KeyedLocks, side_by_side
from pipeline.supply import ocilayout
from pipeline.supply.release import immutable_tags, moving_tags

T = TypeVar("T")

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from pathlib import Path

    from pipeline.core.jobs import Job
    from pipeline.core.outcomes import Result
    from pipeline.core.settings import RunOptions
    from pipeline.edges.referrers import Client
    from pipeline.supply.kinds import Kind

# Seconds to wait before each retry; each request is retried a few times within one already.
BACKOFF = (1.0, 3.0)
LAYERS_AT_ONCE = 4  # an image's layers sent side by side (docker push: 5 by default)
_TRANSIENT = re.compile(
    r"\b(5\d\d [A-Z]|429 )|: (5\d\d|429)\b|\bEOF\b|connection reset|connection refused|broken pipe"
    r"|i/o timeout|TLS handshake timeout|server misbehaving",
    re.IGNORECASE,
)
_STATUS = re.compile(r"\b(401 Unauthorized|403 Forbidden|404 Not Found)")


class Uploads:
    """The blobs one run has pushed, each with the repository it went to: the next image that
    has the same blob (a tier's layers, which every service of the tier shares) mounts it from
    there, and one that needs it while it is being sent waits for that instead of sending it
    too. So a layer crosses to the registry once a run, however many images hold it."""

    def __init__(self) -> None:
        self._sending: KeyedLocks[str] = KeyedLocks()
        self._where: dict[str, str] = {}
        # the manifests it put, by (repository, digest): what the release points tags at and
        # the attestations refer to, not read back from the registry
        self.manifests: dict[tuple[str, str], Manifest] = {}

    @contextlib.contextmanager
    def sending(self, digest: str, repository: str) -> Iterator[str | None]:
        """Held while ``repository`` gets the blob; gives a repository of this run that has
        it already (or None), and records ``repository`` as one once the block succeeded."""
        with self._sending.held(digest):
            yield self._where.get(digest)
            self._where[digest] = repository


@dataclass(frozen=True)
class Target:
    """Where and as whom one run publishes."""

    prefix: str  # registry/namespace, e.g. ghcr.io/acme
    username: str | None
    uploads: Uploads = field(default_factory=Uploads, compare=False, repr=False)

    @property
    def registry(self) -> str:
        return self.prefix.split("/", 1)[0]

    def repository(self, service: str) -> str:
        return f"{self.prefix.rstrip('/')}/{service}"

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


def _client(target: Target) -> Client:
    from pipeline.core.settings import PASSWORD_ENV
    from pipeline.edges import referrers

    return referrers.Client(target.registry, target.username, os.environ.get(PASSWORD_ENV))


def upload(client: Client, path: str, tarball: Path, uploads: Uploads) -> ocilayout.Image:
    """The image's blobs (layers, then config) into the repository, each unless there: a
    layer another repository got earlier in the run is mounted from it (``Uploads``). Up to
    ``LAYERS_AT_ONCE`` layers go side by side, as ``docker push`` sends them: the round trips
    of one layer (is it there, mount or open an upload, send) wait for the registry, not for
    the others', and on a long link each layer's stream gets its own window."""
    image = ocilayout.read(tarball)

    def send(layer: dict[str, Any]) -> None:
        digest = str(layer["digest"])
        with uploads.sending(digest, path) as source:
            opened = partial(ocilayout.open_blob, tarball, digest)
            client.push_known_blob(path, layer, opened, source)

    side_by_side(send, image.layers, LAYERS_AT_ONCE, f"push-{path}")
    config_type = json.loads(image.manifest)["config"]["mediaType"]
    client.push_blob(path, image.config, config_type)
    return image


async def _push(service: str, ref: str, target: Target, send: Callable[[], T]) -> T:
    """One push of ``service``'s image (``send``, run in a thread), retrying passing failures;
    returns what ``send`` returns."""
    from pipeline.edges.registry import RegistryError

    for attempt, delay in enumerate((*BACKOFF, None), start=1):
        try:
            return await anyio.to_thread.run_sync(send)
        except (RegistryError, ValueError, OSError) as exc:
            message = str(exc).strip()
            if delay is None or not _TRANSIENT.search(message):
                detail = target.explain(message)
                if delay is None:
                    detail = f"{ref}: gave up after {attempt} attempts\n{detail}"
                raise BuildError(service, "publish", detail) from exc
            get_logger().warning(
                "push_retried", ref=ref, attempt=attempt, wait=delay, error=message
            )
            await anyio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


async def push_immutable(tarball: Path, job: Job, target: Target) -> tuple[str, ...]:
    """The image exactly as tested and exported (the layout in ``tarball``, whose digest the
    report names) under its immutable tags (the commit, the version): its blobs once, then
    its manifest under each tag; returns references with its digest.

    Pushed by the registry's API, not by the engine: an engine's push makes the image config
    anew, with its own times, so what it pushes would not be the image that was measured."""
    name = job.service.name
    repo = target.repository(name)
    path = repo.removeprefix(f"{target.registry}/")
    client = _client(target)
    image = await _push(name, repo, target, partial(upload, client, path, tarball, target.uploads))
    out = []
    for tag in immutable_tags(job.stamp):
        ref = f"{repo}:{tag}"
        put = partial(client.put_manifest, path, tag, image.manifest, image.media_type)
        out.append(f"{ref}@{await _push(name, ref, target, put)}")
    target.uploads.manifests[path, image.digest] = (image.manifest, image.media_type, image.digest)
    return tuple(out)


@dataclass(frozen=True)
class Release:
    """What happened to the moving tags of one publish."""

    moved: tuple[str, ...] = ()  # references now pointing at this run's images
    held: tuple[str, ...] = ()  # references left (or put back) where they were
    reason: str = ""  # why some were held
    left: tuple[str, ...] = ()  # references a failure left changed, each with what to do

    @property
    def complete(self) -> bool:
        return not self.held

    def summary(self) -> str:
        if not self.moved and not self.held:
            return "release: no moving tags (a dirty build, or no commit)"
        if self.complete:
            return f"release: moving tags moved: {', '.join(self.moved)}"
        left = f"; NOT put back: {'; '.join(self.left)}" if self.left else ""
        return (
            f"release: moving tags left where they were ({self.reason}): "
            f"{', '.join(self.held)}{left}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "moved": list(self.moved),
            "held": list(self.held),
            "reason": self.reason,
            "left": list(self.left),
        }


@dataclass(frozen=True)
class Move:
    """One moving tag to point at one tested manifest."""

    repository: str  # the path in the registry, e.g. acme/users
    tag: str
    digest: str  # of the tested image, pushed under its commit tag

    def ref(self, registry: str) -> str:
        return f"{registry}/{self.repository}:{self.tag}"


Manifest = tuple[bytes, str, str]  # bytes, media type, digest


def _put_back(client: Client, move: Move, before: Manifest | None) -> str | None:
    """``move``'s tag pointed where it was; None when it is, else what is left to do."""
    from pipeline.edges.referrers import RegistryError

    ref, was = move.ref(client.registry), before[2] if before else None
    try:
        now = client.find_manifest(move.repository, move.tag)
        if (now[2] if now else None) == was:
            return None
        if before is not None:
            client.put_manifest(move.repository, move.tag, before[0], before[1])
            return None
        deleted = client.delete_tag(move.repository, move.tag)
    except RegistryError as exc:
        return f"{ref} could not be put back ({exc}); fix: point it {was or 'nowhere (delete it)'}"
    if deleted:
        return None
    return (
        f"{ref} did not exist before and {client.registry} does not allow deleting a tag; "
        "fix: delete it in the registry's interface"
    )


def release(
    client: Client, moves: Sequence[Move], pushed: Mapping[tuple[str, str], Manifest] | None = None
) -> tuple[list[Move], str, list[str]]:
    """Move every tag or none: returns the moves made, why it stopped (or ""), and what a
    failure left changed. Runs in a worker thread; an interruption of the run undoes too.

    The registry's requests go side by side (``side_by_side``): the reads of where each tag
    points and of each tested manifest (unless the run ``pushed`` it: by (repository,
    digest)), then the moves of the tags that exist, then those of the new ones; a failure
    among them puts back every tag of the moves begun, once all have ended. A release of a few
    hundred moving tags costs a few round trips, not one each."""
    import anyio.from_thread

    from pipeline.edges.referrers import RegistryError

    known = pushed or {}
    images = sorted({(m.repository, m.digest) for m in moves} - known.keys())
    try:
        found = side_by_side(lambda m: client.find_manifest(m.repository, m.tag), moves)
        read = side_by_side(lambda image: client.manifest(*image), images)
    except RegistryError as exc:
        return [], f"could not read where the moving tags point: {exc}", []
    before = dict(zip(moves, found, strict=True))
    tested = {**known, **dict(zip(images, read, strict=True))}

    def move(m: Move) -> RegistryError | None:
        body, media_type, _ = tested[m.repository, m.digest]
        try:
            client.put_manifest(m.repository, m.tag, body, media_type)
        except RegistryError as exc:
            return exc
        return None

    def put_back() -> list[str]:
        done = side_by_side(lambda m: _put_back(client, m, before[m]), touched)
        return [msg for msg in done if msg]

    touched: list[Move] = []
    # Tags that exist first: each can be put back; a new tag may not be deletable.
    for wave in ([m for m in moves if before[m]], [m for m in moves if not before[m]]):
        try:
            anyio.from_thread.check_cancelled()
            touched += wave
            answers = side_by_side(move, wave)
        except BaseException:  # the run's interruption
            put_back()
            raise
        failures = [(m, error) for m, error in zip(wave, answers, strict=True) if error]
        if failures:
            failed, error = failures[0]
            return [], f"{failed.ref(client.registry)}: {error}", put_back()
    return touched, "", []


async def move_tags(
    results: Sequence[Result],
    jobs: Sequence[Job],
    target: Target,
) -> tuple[list[Result], Release]:
    """Move the moving tags of every service, only if every service passed and pushed, and
    all of them or none."""
    from pipeline.core.settings import PASSWORD_ENV
    from pipeline.edges import referrers

    wanted = {
        job.service.name: [
            f"{target.repository(job.service.name)}:{t}" for t in moving_tags(job.stamp)
        ]
        for job in jobs
    }
    every = tuple(ref for refs in wanted.values() for ref in refs)
    failed = [r.service for r in results if not r.ok]
    unpushed = [r.service for r in results if r.ok and wanted[r.service] and not r.published]
    if failed or unpushed:
        reason = f"{', '.join(failed)} failed" if failed else f"{', '.join(unpushed)} not pushed"
        get_logger().warning("moving_tags_held", reason=reason, tags=list(every))
        return list(results), Release(held=every, reason=reason)
    moves = [
        Move(ref.split("/", 1)[1].rsplit(":", 1)[0], ref.rsplit(":", 1)[1], digest)
        for r in results
        if (digest := r.published[0].rsplit("@", 1)[-1] if r.published else "")
        for ref in wanted[r.service]
    ]
    if not moves:
        return list(results), Release()
    client = referrers.Client(target.registry, target.username, os.environ.get(PASSWORD_ENV))
    done = partial(release, client, moves, target.uploads.manifests)
    _, reason, left = await anyio.to_thread.run_sync(done)
    if reason:
        get_logger().warning("moving_tags_held", reason=reason, tags=list(every), left=left)
        return list(results), Release(held=every, reason=reason, left=tuple(left))
    digests = {m.repository.rsplit("/", 1)[-1]: m.digest for m in moves}
    by_service = {name: tuple(f"{ref}@{digests[name]}" for ref in wanted[name]) for name in wanted}
    out = [replace(r, published=(*r.published, *by_service[r.service])) for r in results]
    moved = tuple(ref for refs in by_service.values() for ref in refs)
    get_logger().info("moving_tags_moved", tags=list(moved))
    return out, Release(moved=moved)


async def attach(
    service: str, target: Target, digest: str, documents: Mapping[Kind, str]
) -> dict[Kind, str]:
    """The image's documents pushed as artifacts referring to it (referrers API, or the tag
    fallback), in their kinds' order; returns each artifact's reference."""
    from pipeline.core.settings import PASSWORD_ENV
    from pipeline.edges import referrers

    repository = target.repository(service)
    registry, _, path = repository.partition("/")

    def push() -> dict[Kind, str]:
        client = referrers.Client(registry, target.username, os.environ.get(PASSWORD_ENV))
        if (pushed := target.uploads.manifests.get((path, digest))) is not None:
            client.knows(path, pushed[0], pushed[1])
        kinds = list(documents)
        made = [
            referrers.Document(
                kind.media_type, documents[kind].encode(), kind.media_type, kind.annotations
            )
            for kind in kinds
        ]
        return dict(zip(kinds, client.attach_all(path, digest, made), strict=True))

    try:
        pushed = await anyio.to_thread.run_sync(push)
    except referrers.RegistryError as exc:
        raise BuildError(service, "attest", target.explain(str(exc))) from exc
    return {kind: f"{repository}@{ref}" for kind, ref in pushed.items()}


def target_for(options: RunOptions) -> Target | None:
    if options.publish_to is None:
        return None
    return Target(options.publish_to, options.registry_username)
