"""The one place that talks to the engine: build, measure and check each service image
concurrently, recording a Result per service. A failure never cancels its siblings.

Per service, unit tests run beside the image build; once the image exists, its facts (an
export), smoke test and health probe run side by side. A check that already passed on an
image of identical content is not run again.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import dagger
from dagger import dag

from pipeline.core import jobs, workspace
from pipeline.core.delivery import Built, Deliver, keep_nothing
from pipeline.core.errors import BuildError, PipelineError, UsageError
from pipeline.core.log import get_logger
from pipeline.core.outcomes import Check, ImageFacts, Result, Status, Step
from pipeline.core.settings import CA_BUNDLE_ENV, INDEX_URL_ENV
from pipeline.engine import compat, images, probes
from pipeline.engine.enginecheck import RUNNER_HOST, SESSION_PORT
from pipeline.engine.inventory import inventory
from pipeline.engine.layers import program_text
from pipeline.supply import ocilayout

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence

    from anyio.abc import TaskGroup

    from pipeline.core.model import Project, Service
    from pipeline.core.settings import BuildSettings, RunOptions

log = get_logger()
T = TypeVar("T")


def secrets_from_env(settings: BuildSettings) -> images.Secrets:
    """The run's secrets, from the environment into Dagger secrets; never anywhere else. The
    CA bundle's secret is named by a digest of its certificates (public data), so the step
    that hands it to the builders is another step for another bundle (images.ca_files)."""
    index = os.environ.get(INDEX_URL_ENV) if settings.private_index else None
    bundle = os.environ.get(CA_BUNDLE_ENV)
    pem = Path(bundle).read_text(encoding="utf-8") if bundle else None
    ca = None
    if pem:
        named = f"pipeline-ca-bundle-{hashlib.sha256(pem.encode()).hexdigest()[:16]}"
        ca = compat.shared(dag.set_secret(named, pem))
    return images.Secrets(
        index_url=compat.shared(dag.set_secret("pipeline-index-url", index)) if index else None,
        ca_bundle=ca,
    )


def _expected(exc: BaseException) -> BaseException | None:
    """The failure to record for a service, or None for a bug that must surface. The SDK
    resolves nested objects in task groups, so an engine error may come inside a group."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_expected(e) for e in exc.exceptions]
        return next((leaf for leaf in leaves if leaf is not None), None)
    return exc if isinstance(exc, dagger.DaggerError | OSError | BuildError) else None


# Lines an engine with an engine-wide CA hook adds around every command's output.
_CA_HOOK = re.compile(
    r"^(Updating certificates in /etc/ssl/certs\.\.\.|\d+ added, \d+ removed; done\."
    r"|Running hooks in /etc/ca-certificates/update\.d\.\.\.|done\.)$"
)


# Commands that install what a service runs on: their failure is the dependencies' step,
# whichever check or build was waiting for them.
_INSTALLS = ("uv pip install", "uv export", "uv venv", "apt-get install")


def _failed_step(exc: BaseException, step: str) -> str:
    if not isinstance(exc, dagger.ExecError):
        return step
    command = " ".join(exc.command)
    # a tier's plan (the resolution of its install), or the proof of its layer's place
    planned = any(program_text(name) in command for name in ("plan.py", "disjoint.py"))
    return "dependencies" if planned or any(i in command for i in _INSTALLS) else step


def _lines(text: str | None) -> list[str]:
    """The output's lines, less blank ones and those the engine added."""

    def said(line: str) -> bool:
        return bool(line) and not _CA_HOOK.match(line)

    return [ln for ln in (text or "").splitlines() if said(ln.strip())]


PROGRAMS = (
    "snapshot.py",
    "layer.py",
    "compile.py",
    "inventory.py",
    "probe.py",
    "members.py",
    "plan.py",
    "disjoint.py",
    "tartree.py",
)


def shown_command(command: str) -> str:
    """A command as a failure shows it: each in-container program's source (passed as
    ``python -c TEXT``, quoted for a shell or not) replaced by the program's name."""
    for name in PROGRAMS:
        text = program_text(name)
        for form in (shlex.quote(text), text):
            command = command.replace(form, f"<{name}>")
    return command


def _reason(exc: BaseException, service: Service) -> str:
    """One headline (the command's last words, stderr first), then the command and detail."""
    if isinstance(exc, dagger.ExecError):
        err, out = _lines(exc.stderr), _lines(exc.stdout)
        command = shown_command(" ".join(exc.command))
        headline = (err or out or [f"`{command}` failed"])[-1].strip()
        detail = "\n".join([*out[-10:], *err[-10:]])
        if "-c /tmp/pins.txt" in command and "No solution found" in exc.stderr:
            # the service's requirements against the installed set of its tier
            headline = (
                f"{service.name}'s requirements conflict with the pins of tier "
                f"{service.tier!r} ({headline}); fix: loosen the tier's pin or move the package "
                "out of the tier: a tier's installed set constrains every service in it"
            )
        if "references a workspace in `tool.uv.sources`" in (exc.stderr or ""):
            headline += (
                "; fix: keep the uv workspace's root (its pyproject with [tool.uv.workspace], "
                "and its uv.lock) inside the project, where the pipeline finds it and builds "
                "the workspace libraries itself"
            )
        return f"{headline}\ncommand: {command}\n{detail}"
    if isinstance(exc, BuildError):
        return exc.detail
    return str(exc).strip() or type(exc).__name__


_COMPRESSIONS: dict[str, dagger.ImageLayerCompression | None] = {
    "gzip": None,  # the engine's default
    "zstd": dagger.ImageLayerCompression.Zstd,
    "uncompressed": dagger.ImageLayerCompression.Uncompressed,
}


def _compressed(compression: str) -> dagger.ImageLayerCompression | None:
    """The layers' compression to ask of the engine (the config allows only these names:
    another one is a KeyError, never a silent gzip)."""
    return _COMPRESSIONS[compression]


async def _export(
    image: dagger.Container, folder: Path, created: str, compression: str
) -> tuple[ImageFacts, Path]:
    """Digest, compressed size and layers of an image, from an OCI tarball in ``folder``
    whose config says it was made at ``created`` (ocilayout.normalize): the same inputs give
    the same digest on every engine."""
    tarball = folder / "image.tar"
    await _write_tarball(image, tarball, compression)
    normalized = await anyio.to_thread.run_sync(ocilayout.normalize, tarball, created)
    return _facts(normalized), tarball


async def _write_tarball(image: dagger.Container, tarball: Path, compression: str) -> None:
    """The image's OCI tarball written at ``tarball`` on this host. Shielded: a sibling
    check's failure cancels the task, but the engine would go on writing the tarball into a
    staging folder that is being removed (a partial file left in --out, or a transfer still
    open when the session closes)."""
    with anyio.CancelScope(shield=True):
        await image.export(str(tarball), forced_compression=_compressed(compression))


async def _read_facts(
    image: dagger.Container, reader: str, created: str, compression: str, staging: Path
) -> ImageFacts:
    """The same facts as ``_export``'s, with no file to keep: the engine makes the image's
    tarball and a tiny exec in ``reader`` (an image with Python) sends back only its small
    files (index, manifest, config), so no layer crosses to this host. On v0.11, whose
    ``asTarball`` copies the whole tarball into the engine's cache through its file sync
    (5.8 s for a 59 MB image, where an export to this host takes 0.6 s), the tarball is
    exported to ``staging`` instead, read there and removed."""
    if compat.legacy():
        exported = staging / "facts.tar"
        await _write_tarball(image, exported, compression)
        try:
            read = await anyio.to_thread.run_sync(ocilayout.read, exported)
        finally:
            exported.unlink(missing_ok=True)
        return _facts(ocilayout.restamped(read, created))
    argv = ["python3", "-c", program_text("members.py"), "/image.tar"]
    tarball = image.as_tarball(forced_compression=_compressed(compression))
    ran = dag.container().from_(reader).with_mounted_file("/image.tar", tarball)
    out = await ran.with_(compat.run(argv)).stdout()
    small = base64.b64decode(out.strip().splitlines()[-1])
    return _facts(ocilayout.restamped(ocilayout.read(small), created))


def _facts(image: ocilayout.Image) -> ImageFacts:
    sizes = tuple(int(layer["size"]) for layer in image.layers)
    layers = tuple(str(layer["digest"]) for layer in image.layers)
    return ImageFacts(image.digest, len(image.config) + sum(sizes), layers, sizes)


@dataclass
class _Progress:
    """How far one service got; what a failure reports."""

    step: str = "build"
    tests: dict[str, bool] = field(default_factory=dict)
    facts: ImageFacts | None = None
    tarball: str = ""
    published: tuple[str, ...] = ()
    tier_image: ImageFacts | None = None
    steps: dict[str, float] = field(default_factory=dict)  # seconds each step took
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)  # (start, seconds)
    staged: Path | None = None  # the exported tarball, until every check has passed
    installed: dict[str, Any] | None = None  # what the image holds, for its SBOM
    sbom: str = ""
    attested: str = ""  # the provenance artifact pushed beside the image
    reused: set[str] = field(default_factory=set)  # checks not run: passed on equal content
    started: float = field(default_factory=time.time)

    async def timed(self, name: str, work: Awaitable[T]) -> T:
        started, begun = time.monotonic(), time.time()
        try:
            return await work
        finally:
            took = round(time.monotonic() - started, 2)
            self.steps[name] = took
            self.spans[name] = (round(begun - self.started, 2), took)

    async def check(self, name: str, work: Awaitable[object]) -> None:
        try:
            await self.timed(name, work)
        except Exception as exc:
            leaf = _expected(exc)
            if leaf is None or _failed_step(leaf, name) == name:
                self.tests[name] = False  # the check itself failed, not what it runs on
                self.step = name
            raise
        self.tests[name] = True


@dataclass(frozen=True)
class _Context:
    """What every service task of one run shares."""

    project: Project
    settings: BuildSettings
    options: RunOptions
    limiter: anyio.CapacityLimiter
    tiers: dict[str, images.TierImage]
    secrets: images.Secrets
    deliver: Deliver
    documents: bool  # whether the delivery needs what the image holds (an SBOM)
    engine: str  # the engine's version, as results name it


async def _concurrently(*work: Callable[[], Coroutine[Any, Any, object]]) -> None:
    async with anyio.create_task_group() as tg:
        for fn in work:
            tg.start_soon(fn)


def _into(
    out: list[T], work: Callable[[], Awaitable[T]]
) -> Callable[[], Coroutine[Any, Any, None]]:
    """``work`` as a task that appends what it gives to ``out``."""

    async def task() -> None:
        out.append(await work())

    return task


def _started(tg: TaskGroup, work: Awaitable[T]) -> Callable[[], Awaitable[T]]:
    """``work`` started now in ``tg``; what it gives (or raises) is kept for the caller to
    await when it is ready for it, so it surfaces in the caller's step, not the task group's."""
    done = anyio.Event()
    gave: list[T] = []
    raised: list[Exception] = []

    async def run() -> None:
        try:
            gave.append(await work)
        except Exception as exc:  # noqa: BLE001 - kept, raised where it is awaited
            raised.append(exc)
        finally:
            done.set()

    async def result() -> T:
        await done.wait()
        if raised:
            raise raised[0]
        return gave[0]

    tg.start_soon(run)
    return result


async def _measure(
    build: images.ServiceBuild, ctx: _Context, progress: _Progress, staging: Path, created: str
) -> None:
    """The image's facts (from its export when the delivery takes the tarball, else read in
    the engine), its tier's (its bottom layers: a tier image is never exported on its own),
    and for a delivery what it holds."""
    progress.step = Step.EXPORT
    if ctx.documents:  # the delivery writes or pushes the tarball
        exported = _export(build.image, staging, created, ctx.settings.compression)
        facts, progress.staged = await progress.timed(Step.EXPORT, exported)
    else:
        settings = ctx.settings
        read = _read_facts(build.image, settings.base_image, created, settings.compression, staging)
        facts = await progress.timed(Step.EXPORT, read)
    progress.facts = facts
    progress.tier_image = facts.bottom(len(facts.layers) - build.own_layers)
    if ctx.documents:
        progress.installed = await progress.timed(Step.SBOM, inventory(build.image))


async def _steps(job: jobs.Job, ctx: _Context, progress: _Progress, staging: Path) -> None:
    service, options = job.service, ctx.options
    spec = service.spec
    build = images.service_build(ctx.project, service, ctx.settings, ctx.tiers, job.stamp)
    image = build.image

    todo, progress.reused = _checks_to_run(job, options)

    async def unit() -> None:
        if build.unit_tests is not None and Check.UNIT in todo:
            await progress.check(Check.UNIT, build.unit_tests.sync())

    async def measure() -> None:
        await _measure(build, ctx, progress, staging, job.stamp.created)

    # the checks of the running image, each as the exec (or probe) that runs it
    runs: dict[str, Callable[[], Awaitable[object]]] = {}
    if spec.smoke:
        runs[Check.SMOKE] = image.with_(compat.run(images.smoke_argv(service))).sync
    runs[Check.HEALTH] = partial(probes.health, service, image, ctx.settings, ctx.secrets)

    async def check(name: str, early: Callable[[], Awaitable[object]] | None = None) -> None:
        if name in todo:
            await progress.check(name, (early or runs[name])())

    tier = ctx.tiers[service.tier]

    async def image_and_checks() -> None:
        # The image and its checks are asked for with its tier, not each after the one before:
        # the image's own layers need no tier, and the engine does the work they share once.
        # Each is awaited, timed and blamed as its own step: a check's outcome only once the
        # image is built, so a broken image fails its build, not its checks.
        async with anyio.create_task_group() as tg:
            built = _started(tg, image.sync())
            early = {name: _started(tg, run()) for name, run in runs.items() if name in todo}
            await progress.timed(Step.TIER, tier.image.sync())
            await progress.timed(Step.IMAGE, built())
            await _concurrently(measure, *(partial(check, name, early.get(name)) for name in runs))

    # the proofs of the places of the tier's layers gate the result, not the image: they run
    # beside its build and checks, and nothing is delivered before they pass
    proofs = (ctr.sync for ctr in tier.proofs)
    await _concurrently(unit, image_and_checks, *proofs)
    if _contradicted(job, progress):
        todo, progress.reused = progress.reused, set()
        await _concurrently(unit, *(partial(check, name) for name in runs))
    progress.tests.update(dict.fromkeys(progress.reused, True))
    await _finish(job, ctx, progress)


def _checks_to_run(job: jobs.Job, options: RunOptions) -> tuple[set[str], set[str]]:
    """The checks this build runs, and those it reuses: passed on an image of equal content."""
    expected = {c.value for c in jobs.expected_checks(job)} if options.test else set()
    return expected - job.passed, expected & job.passed


def _contradicted(job: jobs.Job, progress: _Progress) -> bool:
    """Whether checks were reused for an image that differs from the one a stored result of
    the same key names: they passed on that one, so they prove nothing of this one."""
    built = progress.facts.digest if progress.facts else None
    if not (progress.reused and job.recorded and built != job.recorded):
        return False
    log.warning(
        "cache_entry_contradicted",
        service=job.service.name,
        recorded=job.recorded,
        built=built,
        checks=sorted(progress.reused),
    )
    return True


async def _finish(job: jobs.Job, ctx: _Context, progress: _Progress) -> None:
    """The size budget, then the delivery: only images that passed every check are written
    or pushed."""
    progress.step = "size budget"
    assert progress.facts is not None  # noqa: S101 - measured before
    size, budget = progress.facts.size / 1e6, job.service.spec.size_budget_mb
    if budget is not None and size > budget:
        msg = f"image is {size:.1f} MB, over its size_budget_mb of {budget:g}"
        raise BuildError(job.service.name, "size budget", msg)
    built = Built(job, progress.facts, progress.staged, progress.installed, progress.started)

    def step(name: str) -> None:
        progress.step = name

    delivered = await ctx.deliver(built, step)
    progress.tarball, progress.sbom = delivered.tarball, delivered.sbom
    progress.published, progress.attested = delivered.published, delivered.attested


def _staging(service: str) -> str:
    """The name prefix of a service's staging folder in ``--out``: it names this process, so
    a later run can tell a folder left by a killed run from one of a run still going."""
    return f".{service}-pipeline{os.getpid()}-"


_STAGING = re.compile(r"^\.[a-z][a-z0-9-]*-pipeline(\d+)-")


def _sweep(folder: Path) -> None:
    """Remove staging folders that killed runs left in ``folder`` (their process is gone)."""
    for entry in folder.iterdir():
        found = _STAGING.match(entry.name)
        if found and entry.is_dir() and not Path(f"/proc/{found[1]}").exists():
            shutil.rmtree(entry, ignore_errors=True)


async def _attempt(job: jobs.Job, ctx: _Context, progress: _Progress) -> None:
    out_dir = ctx.options.out_dir
    # unique per run and service, in the target folder so the final rename is atomic
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=_staging(job.service.name)) as tmp:
        await _steps(job, ctx, progress, Path(tmp))


async def _build_one(job: jobs.Job, ctx: _Context) -> Result:
    service = job.service
    async with ctx.limiter:
        progress = _Progress()
        started = time.monotonic()
        log.info("build_started", service=service.name, tier=service.tier)
        try:
            await _attempt(job, ctx, progress)
        except Exception as exc:
            failure = _expected(exc)
            if failure is None:
                raise
            step = _failed_step(failure, progress.step)
            status, reason = Status.FAILED, f"{step}: {_reason(failure, service)}"
        else:
            status, reason = Status.OK, ""
    reused = tuple(sorted(progress.reused))
    return Result(
        service=service.name,
        tier=service.tier,
        status=status,
        duration=time.monotonic() - started,
        image=progress.facts,
        tests=progress.tests,
        reason=reason,
        tarball=progress.tarball,
        sbom=progress.sbom,
        attestation=progress.attested,
        published=progress.published,
        tier_image=progress.tier_image,
        reused_checks=reused,
        steps=progress.steps,
        started=progress.started,
        spans=progress.spans,
        engine=ctx.engine,
    )


async def run(
    project: Project,
    work: Sequence[jobs.Job],
    settings: BuildSettings,
    options: RunOptions,
    deliver: Deliver = keep_nothing,
    on_result: Callable[[jobs.Job, Result], None] | None = None,
    selected: Collection[Service] = (),
) -> list[Result]:
    """Build every job's service, at most ``options.jobs`` at once (by default as many as the
    engine's machine has logical CPUs), a tier whose services all wait for a slot started
    meanwhile; each image that passes its checks goes to ``deliver``, each result to
    ``on_result`` as it comes. Needs a connection.

    ``selected``: every service of the run, those replayed from the result cache too (default:
    the jobs'). The downloads ahead (images.prefetch) are keyed by their tiers, so a run that
    rebuilds fewer services than the last, such as an edit of one after a full build, replays
    that build's downloads instead of running an exec for a shorter chain of tiers."""
    order = list(work)  # the order results are returned in
    work = sorted(work, key=_own_work)
    start = await _start(project, work, settings, options.jobs)
    if options.out_dir is not None:
        options.out_dir.mkdir(parents=True, exist_ok=True)
    # where the staging folders go: --out, else the system's temporary folder, where a killed
    # run's (a publish's image tarballs, 60-140 MB each) would otherwise stay for good
    _sweep(options.out_dir or Path(tempfile.gettempdir()))
    if isinstance(start, dagger.DaggerError):
        # nothing can be built without it: every service fails, and says why
        why = "prepare: the run's CA bundle could not be handed to the builders: "
        why += _reason(start, work[0].service)
        return [
            Result(j.service.name, j.service.tier, Status.FAILED, 0.0, reason=why) for j in order
        ]
    log.info("build_slots", jobs=start.slots, given=options.jobs is not None)
    ctx = _Context(
        project,
        settings,
        options,
        anyio.CapacityLimiter(max(1, start.slots)),
        start.tiers,
        start.secrets,
        deliver,
        documents=options.out_dir is not None or options.publish_to is not None,
        engine=start.engine,
    )
    results: dict[str, Result] = {}

    async def one(job: jobs.Job) -> None:
        result = await _build_one(job, ctx)
        if on_result is not None:
            on_result(job, result)
        results[job.service.name] = result

    used = {s.tier for s in selected} | {job.service.tier for job in work}
    ahead = images.prefetch(project, used, settings, start.secrets)
    # A tier whose services all wait for a build slot is asked for now: a tier is shared, and
    # a heavy one (an ML tier's install) is often the run's longest chain.
    first = {job.service.tier for job in work[: start.slots]}
    waiting = {job.service.tier for job in work[start.slots :]} - first
    ahead += [start.tiers[t].image for t in sorted(waiting)]
    async with anyio.create_task_group() as outer:
        outer.start_soon(_ahead, ahead)
        async with anyio.create_task_group() as tg:
            for job in work:
                tg.start_soon(one, job)
        outer.cancel_scope.cancel()  # work ahead is of no use once every build is done
    return [results[j.service.name] for j in order]


def _own_work(job: jobs.Job) -> bool:
    """Where a job's build starts among those waiting for a slot: the longest first (the
    longest-processing-time rule, whose last build to end is then a short one), as told by
    what a service does beyond its tier's shared layers: one with Debian packages of its own
    (an apt-get update and install, seconds in its own chain and on one core) before the
    rest, each in name order (``sorted`` is stable)."""
    return not job.service.spec.apt


@dataclass(frozen=True)
class _Started:
    """What ``_start`` found and made."""

    secrets: images.Secrets
    tiers: dict[str, images.TierImage]
    engine: str  # the engine's version, and where it is when not the default
    slots: int  # services built at once


async def _start(
    project: Project, work: Sequence[jobs.Job], settings: BuildSettings, slots: int | None
) -> _Started | dagger.DaggerError:
    """What every build of the run needs first, asked of the engine side by side (each is a
    round trip or an exec, and none needs another): the base image checked (a bad one is
    the run's error, before anything else is said), the builders' CA folder made, the
    engine's version, unless ``slots`` says how many services to build at once the logical
    CPUs of the engine's machine, and the tier images' graph built meanwhile. The CA folder's
    failure is returned: every service fails with it."""
    secrets = secrets_from_env(settings)
    base: list[PipelineError] = []
    ca_failed: list[dagger.DaggerError] = []
    engine: list[str] = []
    tiers: dict[str, images.TierImage] = {}
    count: list[int] = []

    async def check_base() -> None:
        try:
            await _pullable(settings.base_image)
            await _python_allowed(settings.base_image, work)
        except PipelineError as exc:  # the image cannot be pulled, or its Python is refused
            base.append(exc)

    async def hand_ca() -> None:
        try:
            await _hand_ca(settings, secrets)
        except dagger.DaggerError as exc:
            ca_failed.append(exc)

    async def graph() -> None:
        tiers.update(images.tier_images(project, settings, secrets))

    machine = partial(_slots, slots, settings.base_image)
    try:
        await _concurrently(
            check_base, hand_ca, _into(engine, dag.version), graph, _into(count, machine)
        )
    except BaseExceptionGroup as group:  # a bug or a lost engine: as if asked one at a time
        raise group.exceptions[0] from None
    if base:
        raise base[0]
    if ca_failed:
        return ca_failed[0]
    return _Started(secrets, tiers, _engine_named(engine[0]), count[0])


def _engine_named(version: str) -> str:
    """The engine as results name it: its version, and where it is when not the default."""
    where = os.environ.get(RUNNER_HOST) or ("dagger run" if os.environ.get(SESSION_PORT) else "")
    return f"{version} at {where}" if where else version


async def _slots(given: int | None, base_image: str) -> int:
    """How many services to build at once: as given, else as many as the engine's machine has
    logical CPUs (cargo's and make -j's rule: a service's checks are CPU-bound, and more of
    them at once than cores only share the cores, the longest chain's too), else this one's
    when the base image cannot answer (its failure to pull is check_base's to say)."""
    if given is not None:
        return given
    try:
        cores = await engine_cores(base_image)
    except dagger.DaggerError:
        cores = None
    return cores or os.cpu_count() or 1


async def _hand_ca(settings: BuildSettings, secrets: images.Secrets) -> None:
    """The builders' CA folder (images.ca_files) made, when the run has a bundle."""
    if secrets.ca_bundle is not None:
        await images.ca_files(settings, secrets.ca_bundle).sync()


async def _pullable(ref: str) -> None:
    """The base image, pulled before anything starts from it: one that cannot be had is one
    clear error, not a failure of every service (or a traceback)."""
    try:
        await dag.container().from_(ref).sync()
    except dagger.QueryError as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UsageError(
            f"--base-image (or PIPELINE_BASE_IMAGE, base_image): the engine cannot pull {ref}: "
            f"{first}; fix: name an image that exists and this engine's registries serve"
        ) from None


async def _base_says(ref: str, name: str, expression: str) -> str | None:
    """What a Python ``expression`` (of the standard library) gives in the base image ``ref``,
    on the engine's machine; None if its output does not say. The answer is marked: an
    engine's CA hook may print lines of its own around a command's output."""
    ask = ["python3", "-c", f"import os, platform; print('pipeline-{name}=' + str({expression}))"]
    said = await dag.container().from_(ref).with_(compat.run(ask)).stdout()
    found = re.search(rf"^pipeline-{name}=(\S+)$", said, re.MULTILINE)
    return found[1] if found else None


async def engine_cores(ref: str) -> int | None:
    """The logical CPUs an exec may run on on the engine's machine (those of its affinity:
    what `nproc` counts), asked in the base image ``ref``; None if it does not say. The
    engine keeps the answer like any exec's, until its cache is pruned."""
    said = await _base_says(ref, "cores", "len(os.sched_getaffinity(0))")
    return max(1, int(said)) if said and said.isdigit() else None


async def _python_allowed(ref: str, work: Sequence[jobs.Job]) -> None:
    """Every service's and workspace package's ``requires-python`` against the base image's
    Python, asked of the image once, before anything is built."""
    files = [
        f for j in work for f in workspace.python_files(j.service.requirements, j.service.workspace)
    ]
    if not files:
        return
    said = await _base_says(ref, "python", "platform.python_version()")
    if said:
        workspace.check_python(files, said, ref)


async def _ahead(ahead: Sequence[dagger.Container]) -> None:
    """Run the work ahead (the downloads of images.prefetch, the tier images) side by side; a
    failure of one is left to the step that meets the same problem (a tier's install, a
    service's tier) to report."""

    async def one(ctr: dagger.Container) -> None:
        try:
            await ctr.sync()
        except dagger.DaggerError as exc:
            log.debug("ahead_failed", error=(str(exc).splitlines() or [""])[0])

    async with anyio.create_task_group() as tg:
        for ctr in ahead:
            tg.start_soon(one, ctr)
