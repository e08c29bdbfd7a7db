"""The commands behind the CLI: ``plan`` (no engine) and a run (build, export, publish): what
each service needs, the engine only if some service needs it, then the results."""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from pipeline import inputs, jobs, registry, report, settings
from pipeline.errors import UsageError
from pipeline.log import get_logger
from pipeline.resultcache import ResultCache

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    import anyio

    from pipeline.graph import Project, Service
    from pipeline.report import Result
    from pipeline.settings import BuildSettings, RunOptions


def plan(project: Project, services: Sequence[Service], as_json: bool) -> str:
    data: dict[str, Any] = {
        "project": str(project.root),
        "config": str(project.config_file),
        "tiers": [
            {
                "name": t.name,
                "image": t.image_name,
                "extends": t.spec.extends,
                "requirements": [str(p.relative_to(project.root)) for p in t.requirements],
            }
            for t in project.tiers.values()
        ],
        "services": [
            {
                "name": s.name,
                "tier": s.tier,
                "path": str(s.path.relative_to(project.root)),
                "port": s.spec.port,
                "requirements": s.spec.requirements,
                "uploads": inputs.source_files(s, project.root),
            }
            for s in services
        ],
    }
    if as_json:
        return json.dumps(data, indent=2)
    lines = ["tiers:"]
    for t in data["tiers"]:
        extends = f", extends {t['extends']}" if t["extends"] else ""
        lines.append(
            f"  {t['name']} (image {t['image']}{extends}): "
            f"{', '.join(t['requirements']) or 'no requirements'}"
        )
    lines.append("services:")
    for s in data["services"]:
        uploads = s["uploads"]
        port = f", port {s['port']}" if s["port"] else ""
        lines.append(f"  {s['name']} [{s['tier']}{port}] {s['path']}: uploads {len(uploads)} files")
        lines.extend(f"    {u}" for u in uploads)
    return "\n".join(lines)


async def _engine_run(
    project: Project,
    work: list[jobs.Job],
    build: BuildSettings,
    options: RunOptions,
    cache: ResultCache,
    verbose: bool,
) -> list[Result]:
    """The engine part of a run, cancelled cleanly by Ctrl-C or a CI runner's SIGTERM."""
    import anyio
    import dagger  # the engine is needed only from here on

    from pipeline import runner

    results: list[Result] = []
    interrupted = False

    async def stop_on_signal(scope: anyio.CancelScope) -> None:
        nonlocal interrupted
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                interrupted = True
                scope.cancel()
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signal, tg.cancel_scope)
        config = dagger.Config(log_output=sys.stderr if verbose else None)
        async with dagger.connection(config):
            results = await runner.run(project, work, build, options, cache)
        tg.cancel_scope.cancel()
    if interrupted:
        raise KeyboardInterrupt
    return results


def run(args: argparse.Namespace, project: Project, services: list[Service]) -> int:
    log = get_logger()
    started = time.monotonic()
    options = settings.run_options(
        jobs=args.jobs,
        out_dir=getattr(args, "out", None),
        test=not args.no_test,
        publish=args.command == "publish",
        registry=getattr(args, "registry", None),
        registry_username=getattr(args, "registry_username", None),
        use_cache=not args.no_cache,
    )
    if args.command == "publish" and not options.publish_to:
        raise UsageError("publish needs --registry (or PIPELINE_REGISTRY), e.g. ghcr.io/acme")
    build = settings.build_settings(project, args.base_image, args.cache_scope)
    cache = ResultCache(project.root, build.cache_scope, read=options.use_cache)
    base = registry.resolve(build.base_image)
    if base is None:
        # Without the base image's digest a stored result cannot be trusted to match.
        log.warning("base_image_unresolved", base_image=build.base_image, result_cache="off")
        cache.read = cache.write = False
    base_ref = base or build.base_image
    work = jobs.plan(project, services, build, base_ref, cache)
    log.info(
        "run_started",
        command=args.command,
        services=len(services),
        base_image=base_ref,
        cache_scope=build.cache_scope,
        revision=build.provenance.revision[:12],
        jobs=options.jobs,
    )
    replayed = {j.service.name: r for j in work if (r := jobs.replay(j, cache, options))}
    todo = [j for j in work if j.service.name not in replayed]
    built: dict[str, Result] = {}
    if todo:
        import anyio

        done = anyio.run(_engine_run, project, todo, build, options, cache, args.verbose)
        built = {r.service: r for r in done}
    results = [replayed.get(s.name) or built[s.name] for s in services]
    for result in results:
        report.log_line(result)
    elapsed = time.monotonic() - started
    print(report.table(results))
    print(f"wall time {elapsed:.1f}s")
    report.write_step_summary(results)
    if args.report:
        extra: dict[str, Any] = {
            "revision": build.provenance.revision,
            "cache_scope": build.cache_scope,
            "base_image": base_ref,
            "wall_time": round(elapsed, 2),
        }
        report.write_json(results, args.report, extra)
    return 0 if all(r.ok for r in results) else 1
