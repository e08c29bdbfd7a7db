"""The one place that talks to the engine: build, export and test each service image
concurrently, recording a Result per service. A failure never cancels its siblings."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import dagger
from dagger import dag

from pipeline import images
from pipeline.log import get_logger
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


def _expected(exc: BaseException) -> BaseException | None:
    """The failure to record for a service, or None for a bug that must surface. The SDK
    resolves nested objects in task groups, so an engine error may come inside a group."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_expected(e) for e in exc.exceptions]
        return next((leaf for leaf in leaves if leaf is not None), None)
    return exc if isinstance(exc, dagger.DaggerError | OSError | ValueError) else None


def _reason(exc: BaseException) -> str:
    """One headline (the command's last words on stderr), then the detail."""
    if isinstance(exc, dagger.ExecError):
        lines = [ln for ln in (exc.stderr or exc.stdout or "").strip().splitlines() if ln.strip()]
        headline = lines[-1].strip() if lines else f"`{' '.join(exc.command)}` failed"
        detail = "\n".join(lines[-15:])
        return f"{headline}\ncommand: {' '.join(exc.command)}\n{detail}"
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


async def _build_one(
    service: Service,
    build: images.ServiceBuild,
    settings: images.BuildSettings,
    options: RunOptions,
    limiter: anyio.CapacityLimiter,
) -> Result:
    started = time.monotonic()
    spec = service.spec
    tests: dict[str, bool] = {}
    facts: ImageFacts | None = None
    tarball = ""
    step = "build"
    async with limiter:
        log.info("build_started", service=service.name, tier=service.tier)
        image = build.image
        try:
            if options.test and build.unit_tests is not None:
                step = "unit"
                await build.unit_tests.sync()
                tests["unit"] = True
            step = "build"
            await image.sync()
            step = "export"
            with tempfile.TemporaryDirectory() as tmp:
                target = (options.out_dir or Path(tmp)) / f"{service.name}.tar"
                partial = target.with_suffix(".tar.partial")  # never a half-written tarball
                await image.export(str(partial))
                facts = ImageFacts.from_tarball(partial)
                if options.out_dir is not None:
                    partial.replace(target)
                    tarball = str(target)
            if options.test and spec.smoke:
                step = "smoke"
                await image.with_exec(list(spec.smoke)).sync()
                tests["smoke"] = True
            if options.test and spec.health_path:
                step = "health"
                await _health(service, image, settings)
                tests["health"] = True
            step = "size budget"
            if spec.size_budget_mb is not None and facts.size > spec.size_budget_mb * 1e6:
                size, budget = facts.size / 1e6, spec.size_budget_mb
                msg = f"image is {size:.1f} MB, over its size_budget_mb of {budget:g}"
                raise ValueError(msg)  # noqa: TRY301 - recorded like any other failure below
        except Exception as exc:
            failure = _expected(exc)
            if failure is None:
                raise
            if step in ("unit", "smoke", "health"):
                tests[step] = False
            result = Result(
                service.name,
                service.tier,
                Status.FAILED,
                time.monotonic() - started,
                facts,
                tests,
                f"{step}: {_reason(failure)}",
                tarball,
            )
            log.error(  # noqa: TRY400 - the reason is the story; a traceback is not
                "service_failed",
                service=service.name,
                tier=service.tier,
                step=step,
                duration=round(result.duration, 2),
                reason=result.reason,
            )
            return result
    result = Result(
        service.name, service.tier, Status.OK, time.monotonic() - started, facts, tests, "", tarball
    )
    log.info(
        "service_built",
        service=service.name,
        tier=service.tier,
        duration=round(result.duration, 2),
        digest=facts.digest,
        size=facts.size,
        layers=len(facts.layers),
        tests=tests,
    )
    return result


async def run(
    project: Project,
    services: Sequence[Service],
    settings: images.BuildSettings,
    options: RunOptions,
) -> list[Result]:
    """Build every selected service, at most ``options.jobs`` at once. Needs a connection."""
    built = images.service_builds(project, services, settings)
    if options.out_dir is not None:
        options.out_dir.mkdir(parents=True, exist_ok=True)
    limiter = anyio.CapacityLimiter(max(1, options.jobs))
    results: dict[str, Result] = {}

    async def one(svc: Service) -> None:
        results[svc.name] = await _build_one(svc, built[svc.name], settings, options, limiter)

    async with anyio.create_task_group() as tg:
        for svc in services:
            tg.start_soon(one, svc)
    return [results[s.name] for s in services]
