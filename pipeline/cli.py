"""argv -> settings -> one engine connection -> results -> exit code.

Exit codes: 0 every service ok, 1 a service failed, 2 usage or config error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from pipeline import globs, graph, report
from pipeline.errors import PipelineError, UsageError
from pipeline.images import DEFAULT_EXCLUDES, BuildSettings
from pipeline.log import configure, get_logger
from pipeline.meta import cache_scope_for, changed_since, read_provenance

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pipeline.graph import Project, Service


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "services", nargs="*", metavar="SERVICE", help="services to act on (default: all)"
    )
    common.add_argument(
        "--project-dir",
        type=Path,
        default=Path(os.environ.get("PIPELINE_PROJECT_DIR", ".")),
        help="the monorepo's root (env PIPELINE_PROJECT_DIR; default: current directory)",
    )
    common.add_argument(
        "--tier", action="append", default=[], help="only services of this tier (repeatable)"
    )
    common.add_argument(
        "--changed-since",
        metavar="REF",
        help="only services a change since this git commit affects (their folder, their "
        "tiers' requirements, the config)",
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", help="debug logs and engine progress"
    )

    engine = argparse.ArgumentParser(add_help=False)
    engine.add_argument(
        "--jobs",
        type=int,
        default=os.environ.get("PIPELINE_JOBS", "4"),  # a string default goes through type=
        help="services built at once (env PIPELINE_JOBS; default 4)",
    )
    engine.add_argument(
        "--cache-scope",
        default=os.environ.get("PIPELINE_CACHE_SCOPE"),
        help="prefix of cache volume names (env PIPELINE_CACHE_SCOPE; default: the git branch)",
    )
    engine.add_argument(
        "--base-image",
        default=os.environ.get("PIPELINE_BASE_IMAGE"),
        help="image every stage starts from (env PIPELINE_BASE_IMAGE; default: from the config)",
    )
    engine.add_argument(
        "--no-test", action="store_true", help="skip each image's smoke and health tests"
    )
    engine.add_argument("--report", type=Path, help="also write the results as JSON to this file")

    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Build every service of a Python monorepo from shared tiers, on Dagger.",
        epilog="Run under `dagger run python -m pipeline ...`, or with the dagger CLI on PATH.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "plan", parents=[common], help="show tiers, services and what each uploads (no engine)"
    ).add_argument("--json", action="store_true", help="print the plan as JSON")
    sub.add_parser("build", parents=[common, engine], help="build and test service images")
    export = sub.add_parser(
        "export", parents=[common, engine], help="build, test and write one OCI tarball per service"
    )
    export.add_argument("--out", type=Path, required=True, help="folder for <service>.tar files")
    publish = sub.add_parser(
        "publish",
        parents=[common, engine],
        help="build, test and push each image under its commit, branch and latest tags",
        description=(
            "Tags: <commit> always (<commit>-dirty, and nothing else, when the service's "
            "folder has uncommitted changes), branch-<branch>, and latest from main or master. "
            "The password comes only from PIPELINE_REGISTRY_PASSWORD and reaches the engine "
            "as a Dagger secret."
        ),
    )
    publish.add_argument(
        "--registry",
        default=os.environ.get("PIPELINE_REGISTRY"),
        help="registry and namespace, e.g. ghcr.io/acme (env PIPELINE_REGISTRY)",
    )
    publish.add_argument(
        "--registry-username",
        default=os.environ.get("PIPELINE_REGISTRY_USERNAME"),
        help="user for the registry (env PIPELINE_REGISTRY_USERNAME)",
    )
    return parser


def _uploads(service: Service) -> list[str]:
    """The files of a service folder that its build uploads, as the include/exclude globs say."""
    spec = service.spec
    include = globs.compile_all(spec.include)
    exclude = globs.compile_all([*DEFAULT_EXCLUDES, *spec.exclude])
    return [
        rel
        for path in sorted(service.path.rglob("*"))
        if path.is_file()
        and globs.matches(include, rel := path.relative_to(service.path).as_posix())
        and not globs.matches(exclude, rel)
    ]


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
                "uploads": _uploads(s),
            }
            for s in services
        ],
    }
    if as_json:
        return json.dumps(data, indent=2)
    lines = ["tiers:"]
    for t in data["tiers"]:
        extends = f" (extends {t['extends']})" if t["extends"] else ""
        lines.append(
            f"  {t['image']}{extends}: {', '.join(t['requirements']) or 'no requirements'}"
        )
    lines.append("services:")
    for s in data["services"]:
        uploads = s["uploads"]
        port = f", port {s['port']}" if s["port"] else ""
        lines.append(f"  {s['name']} [{s['tier']}{port}] {s['path']}: uploads {len(uploads)} files")
        lines.extend(f"    {u}" for u in uploads)
    return "\n".join(lines)


def resolve_settings(
    project: Project, base_image: str | None = None, cache_scope: str | None = None
) -> BuildSettings:
    """Build settings by precedence: arguments (CLI or env, via argparse) > the config file."""
    prov = read_provenance(project.root, project.spec.source_url)
    return BuildSettings(
        root=project.root,
        base_image=base_image or project.spec.base_image,
        cache_scope=cache_scope or project.spec.cache_scope or cache_scope_for(prov.branch),
        user=project.spec.user,
        uid=project.spec.uid,
        provenance=prov,
        compile_bytecode=project.spec.compile_bytecode,
    )


async def _run_engine(args: argparse.Namespace, project: Project, services: list[Service]) -> int:
    import dagger  # the engine is needed only from here on

    from pipeline import runner

    log = get_logger()
    settings = resolve_settings(project, args.base_image, args.cache_scope)
    prov, scope = settings.provenance, settings.cache_scope
    options = runner.RunOptions(
        jobs=args.jobs,
        out_dir=getattr(args, "out", None),
        test=not args.no_test,
        publish_to=getattr(args, "registry", None),
        registry_username=getattr(args, "registry_username", None),
    )
    log.info(
        "run_started",
        command=args.command,
        services=len(services),
        base_image=settings.base_image,
        cache_scope=scope,
        revision=prov.revision[:12],
        jobs=args.jobs,
    )
    started = time.monotonic()
    config = dagger.Config(log_output=sys.stderr if args.verbose else None)
    results: list[report.Result] = []
    interrupted = False

    async def stop_on_signal(scope: anyio.CancelScope) -> None:
        # Ctrl-C, or a CI runner's cancel (SIGTERM): cancel the run, close the session.
        nonlocal interrupted
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                interrupted = True
                scope.cancel()
                return

    async def build() -> None:
        nonlocal results, settings, options
        async with dagger.connection(config):
            index_url = os.environ.get("PIPELINE_INDEX_URL")
            if index_url:
                secret = dagger.dag.set_secret("pipeline-index-url", index_url)
                settings = replace(settings, index_url=secret)
            password = os.environ.get("PIPELINE_REGISTRY_PASSWORD")
            if options.publish_to and password:
                secret = dagger.dag.set_secret("pipeline-registry-password", password)
                options = replace(options, registry_password=secret)
            results = await runner.run(project, services, settings, options)

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signal, tg.cancel_scope)
        await build()
        tg.cancel_scope.cancel()
    if interrupted:
        raise KeyboardInterrupt
    elapsed = time.monotonic() - started
    print(report.table(results))
    print(f"wall time {elapsed:.1f}s")
    report.write_step_summary(results)
    if args.report:
        report.write_json(
            results,
            args.report,
            {
                "revision": prov.revision,
                "cache_scope": scope,
                "base_image": settings.base_image,
                "wall_time": round(elapsed, 2),
            },
        )
    return 0 if all(r.ok for r in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure(verbose=args.verbose)
    try:
        if getattr(args, "jobs", 1) < 1:
            raise UsageError("--jobs must be at least 1")
        if args.command == "publish" and not args.registry:
            raise UsageError("publish needs --registry (or PIPELINE_REGISTRY), e.g. ghcr.io/acme")
        project = graph.load(args.project_dir)
        changed = changed_since(project.root, args.changed_since) if args.changed_since else None
        services = project.select(args.services, args.tier, changed)
        if args.command == "plan":
            print(plan(project, services, args.json))
            return 0
        if not services:
            print(f"nothing to do: no service is affected by changes since {args.changed_since}")
            return 0
        return anyio.run(_run_engine, args, project, services)
    except PipelineError as exc:
        print(f"pipeline: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pipeline: interrupted", file=sys.stderr)
        return 130
