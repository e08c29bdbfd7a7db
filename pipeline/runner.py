"""The one place that talks to the engine: build, export and test each service image
concurrently, recording a Result per service. A failure never cancels its siblings."""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import dagger
from dagger import dag

from pipeline import images
from pipeline.log import get_logger
from pipeline.meta import tags_for
from pipeline.report import ImageFacts, Result, Status

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pipeline.graph import Project, Service

log = get_logger()
HEALTH_TIMEOUT = 60


@dataclass(frozen=True)
class RunOptions:
    jobs: int = 4
    out_dir: Path | None = None  # keep OCI tarballs here; otherwise they are measured and dropped
    test: bool = True
    publish_to: str | None = None  # registry/prefix to publish to, e.g. ghcr.io/acme
    registry_username: str | None = None
    registry_password: dagger.Secret | None = None


def _expected(exc: BaseException) -> BaseException | None:
    """The failure to record for a service, or None for a bug that must surface. The SDK
    resolves nested objects in task groups, so an engine error may come inside a group."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_expected(e) for e in exc.exceptions]
        return next((leaf for leaf in leaves if leaf is not None), None)
    return exc if isinstance(exc, dagger.DaggerError | OSError | ValueError) else None


# Lines the engine's CA-certificate hook adds around every command's output.
_CA_HOOK = re.compile(
    r"^(Updating certificates in /etc/ssl/certs\.\.\.|\d+ added, \d+ removed; done\."
    r"|Running hooks in /etc/ca-certificates/update\.d\.\.\.|done\.)$"
)


def _lines(text: str | None) -> list[str]:
    return [ln for ln in (text or "").splitlines() if ln.strip() and not _CA_HOOK.match(ln.strip())]


def _reason(exc: BaseException) -> str:
    """One headline (the command's last words, stderr first), then the command and detail."""
    if isinstance(exc, dagger.ExecError):
        err, out = _lines(exc.stderr), _lines(exc.stdout)
        command = " ".join(exc.command)
        headline = (err or out or [f"`{command}` failed"])[-1].strip()
        detail = "\n".join([*out[-10:], *err[-10:]])
        return f"{headline}\ncommand: {command}\n{detail}"
    return str(exc).strip() or type(exc).__name__


async def _health(
    service: Service, image: dagger.Container, settings: images.BuildSettings
) -> None:
    """Start the image as a service and ask its health path from a second container."""
    spec = service.spec
    if spec.port is None or spec.health_path is None:
        return
    svc = image.with_exposed_port(spec.port).with_exec(list(spec.command)).as_service()
    url = f"http://{service.name}:{spec.port}{spec.health_path}"
    probe = (
        "import sys, time, urllib.request\n"
        f"deadline = time.monotonic() + {HEALTH_TIMEOUT}\n"
        "while True:\n"
        "    try:\n"
        f"        with urllib.request.urlopen({url!r}, timeout=3) as r:\n"
        "            sys.exit(0 if r.status == 200 else 1)\n"
        "    except OSError as exc:\n"
        "        if time.monotonic() > deadline:\n"
        "            print('health check failed:', exc, file=sys.stderr); sys.exit(1)\n"
        "        time.sleep(0.5)\n"
    )
    await (
        dag.container()
        .from_(settings.base_image)
        .with_service_binding(service.name, svc)
        .with_env_variable("PIPELINE_PROBE_AT", str(time.time_ns()))  # a probe is never cached
        .with_exec(["python3", "-c", probe])
        .sync()
    )


async def _publish(
    service: Service,
    image: dagger.Container,
    settings: images.BuildSettings,
    options: RunOptions,
) -> tuple[str, ...]:
    """Push the tested image under each tag of the tag strategy; returns refs with digests."""
    assert options.publish_to is not None  # noqa: S101 - only called when publishing
    repo = f"{options.publish_to.rstrip('/')}/{service.name}"
    if options.registry_username and options.registry_password is not None:
        host = options.publish_to.split("/", 1)[0]
        image = image.with_registry_auth(host, options.registry_username, options.registry_password)
    folder = service.path.relative_to(settings.root).as_posix()
    return tuple(
        [await image.publish(f"{repo}:{tag}") for tag in tags_for(settings.provenance, folder)]
    )


@dataclass
class _Progress:
    """How far one service got; what a failure reports."""

    step: str = "build"
    tests: dict[str, bool] = field(default_factory=dict)
    facts: ImageFacts | None = None
    tarball: str = ""
    published: tuple[str, ...] = ()
    tier_image: ImageFacts | None = None


class _TierSizes:
    """Each tier image measured once, however many services ask."""

    def __init__(self, tiers: dict[str, images.TierImage]) -> None:
        self._tiers = tiers
        self._locks = {name: anyio.Lock() for name in tiers}
        self._facts: dict[str, ImageFacts] = {}

    async def facts(self, tier: str) -> ImageFacts:
        async with self._locks[tier]:
            if tier not in self._facts:
                with tempfile.TemporaryDirectory() as tmp:
                    target = Path(tmp) / "tier.tar"
                    await self._tiers[tier].image.export(str(target))
                    self._facts[tier] = ImageFacts.from_tarball(target)
            return self._facts[tier]


async def _export(
    service: Service, image: dagger.Container, options: RunOptions
) -> tuple[ImageFacts, str]:
    with tempfile.TemporaryDirectory() as tmp:
        target = (options.out_dir or Path(tmp)) / f"{service.name}.tar"
        partial = target.with_suffix(".tar.partial")  # never a half-written tarball
        try:
            await image.export(str(partial))
            facts = ImageFacts.from_tarball(partial)
            if options.out_dir is None:
                return facts, ""
            partial.replace(target)
            return facts, str(target)
        finally:
            partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Context:
    """What every service task of one run shares."""

    settings: images.BuildSettings
    options: RunOptions
    limiter: anyio.CapacityLimiter
    tier_sizes: _TierSizes


async def _steps(
    service: Service, build: images.ServiceBuild, ctx: _Context, progress: _Progress
) -> None:
    settings, options = ctx.settings, ctx.options
    spec, image = service.spec, build.image
    if options.test and build.unit_tests is not None:
        progress.step = "unit"
        await build.unit_tests.sync()
        progress.tests["unit"] = True
    progress.step = "build"
    await image.sync()
    progress.step = "export"
    progress.facts, progress.tarball = await _export(service, image, options)
    progress.tier_image = await ctx.tier_sizes.facts(service.tier)
    if options.test and spec.smoke:
        progress.step = "smoke"
        await image.with_exec(list(spec.smoke)).sync()
        progress.tests["smoke"] = True
    if options.test and spec.health_path:
        progress.step = "health"
        await _health(service, image, settings)
        progress.tests["health"] = True
    progress.step = "size budget"
    size, budget = progress.facts.size / 1e6, spec.size_budget_mb
    if budget is not None and size > budget:
        raise ValueError(f"image is {size:.1f} MB, over its size_budget_mb of {budget:g}")
    if options.publish_to is not None:
        progress.step = "publish"  # only images that passed every check are pushed
        progress.published = await _publish(service, image, settings, options)


async def _build_one(service: Service, build: images.ServiceBuild, ctx: _Context) -> Result:
    progress = _Progress()
    async with ctx.limiter:
        started = time.monotonic()
        log.info("build_started", service=service.name, tier=service.tier)
        try:
            await _steps(service, build, ctx, progress)
        except Exception as exc:
            failure = _expected(exc)
            if failure is None:
                raise
            if progress.step in ("unit", "smoke", "health"):
                progress.tests[progress.step] = False
            status, reason = Status.FAILED, f"{progress.step}: {_reason(failure)}"
        else:
            status, reason = Status.OK, ""
    result = Result(
        service=service.name,
        tier=service.tier,
        status=status,
        duration=time.monotonic() - started,
        image=progress.facts,
        tests=progress.tests,
        reason=reason,
        tarball=progress.tarball,
        published=progress.published,
        tier_image=progress.tier_image,
    )
    # one canonical line per service, with all its figures
    facts = result.image
    figures = {
        "service": result.service,
        "tier": result.tier,
        "duration": round(result.duration, 2),
        "digest": facts.digest if facts else None,
        "size": facts.size if facts else None,
        "layers": len(facts.layers) if facts else None,
        "tests": result.tests,
    }
    if result.ok:
        log.info("service_built", **figures, published=list(result.published))
    else:
        log.error("service_failed", **figures, step=progress.step, reason=reason)
    return result


async def run(
    project: Project,
    services: Sequence[Service],
    settings: images.BuildSettings,
    options: RunOptions,
) -> list[Result]:
    """Build every selected service, at most ``options.jobs`` at once. Needs a connection."""
    tiers = images.tier_images(project, settings)
    built = images.service_builds(project, services, settings, tiers)
    if options.out_dir is not None:
        options.out_dir.mkdir(parents=True, exist_ok=True)
    ctx = _Context(
        settings, options, anyio.CapacityLimiter(max(1, options.jobs)), _TierSizes(tiers)
    )
    results: dict[str, Result] = {}

    async def one(svc: Service) -> None:
        results[svc.name] = await _build_one(svc, built[svc.name], ctx)

    async with anyio.create_task_group() as tg:
        for svc in services:
            tg.start_soon(one, svc)
    return [results[s.name] for s in services]
