"""The commands behind the CLI: ``plan`` (no engine) and a run (build, export, publish): what
each service needs, the engine only if some service needs it, then the results."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

from pipeline.core import jobs, settings
from pipeline.core.errors import PipelineError, UsageError
from pipeline.core.log import get_logger
from pipeline.edges import registry, report
from pipeline.edges.resultcache import ResultCache
from pipeline.engine.enginecheck import (
    RUNNER_HOST,
    START_ONE,
    EngineUnreachableError,
    require_engine,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator
    from pathlib import Path

    import anyio

    from pipeline.core.project import Project, Service
    from pipeline.core.settings import BuildSettings, RunOptions
    from pipeline.edges.publish import Release
    from pipeline.edges.report import Result


@contextlib.asynccontextmanager
async def engine_session(verbose: bool) -> AsyncIterator[None]:
    """One connection to the engine, for the whole run. Whether an engine can be reached is
    asked first (enginecheck), and a session that still fails to start is one clear error
    naming the runner, never a traceback."""
    import dagger

    require_engine()
    config = dagger.Config(log_output=sys.stderr if verbose else None)
    try:
        async with dagger.connection(config):
            yield
    except dagger.ProvisionError as exc:
        where = os.environ.get(RUNNER_HOST) or "the Dagger CLI's default engine"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EngineUnreachableError(
            f"no engine session could be started with {where}: {first}; fix: {START_ONE}"
        ) from None


async def _engine_run(
    project: Project,
    work: list[jobs.Job],
    build: BuildSettings,
    options: RunOptions,
    cache: ResultCache,
    verbose: bool,
) -> tuple[list[Result], Release | None]:
    """The engine part of a run, cancelled cleanly by Ctrl-C or a CI runner's SIGTERM."""
    import anyio

    from pipeline.engine import runner  # the engine's SDK is needed only from here on

    outcome: tuple[list[Result], Release | None] = ([], None)
    interrupted = False

    async def stop_on_signal(scope: anyio.CancelScope) -> None:
        nonlocal interrupted
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                interrupted = True
                scope.cancel()
                return

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signal, tg.cancel_scope)
            async with engine_session(verbose):
                outcome = await runner.run(project, work, build, options, cache)
            tg.cancel_scope.cancel()
    except* PipelineError as group:
        raise group.exceptions[0] from None  # one expected error, said as such
    if interrupted:
        raise KeyboardInterrupt
    return outcome


def _writable_folder(folder: Path, what: str) -> None:
    """Make ``folder`` (for ``what``) and prove a file can be written in it, before any
    build: a run never fails at its end for want of a place to put its results."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(
            f"{what}: cannot write in {folder} ({exc.strerror or exc}); "
            "fix: name a folder you can write to"
        ) from None


def _preflight(args: argparse.Namespace, options: RunOptions, build: BuildSettings) -> None:
    """What would make the run fail at its end, or publish wrongly, found before it starts.
    Checks that only read come first: the places for results are made last, so a refused
    run leaves nothing behind."""
    settings.check_secret_variables()
    prov = build.provenance
    if not prov.known:
        get_logger().warning(
            "no_git_revision",
            project=str(build.root),
            detail="not a git checkout: images say revision 'unknown'; "
            "--version (or PIPELINE_VERSION) names them",
        )
    if options.publish_to is not None and not prov.known and not prov.release:
        raise UsageError(
            f"publish: {build.root} is not a git checkout, so no commit names the images; "
            "fix: publish from a git checkout, or pass --version (it is then the only tag: "
            "branch and latest tags move only for a known commit)"
        )
    has_password = bool(os.environ.get(settings.PASSWORD_ENV))
    if options.publish_to is not None and has_password != bool(options.registry_username):
        given, missing = (
            ("PIPELINE_REGISTRY_PASSWORD", "--registry-username (or PIPELINE_REGISTRY_USERNAME)")
            if has_password
            else ("a registry username", "PIPELINE_REGISTRY_PASSWORD")
        )
        raise UsageError(f"publish: {given} is set but {missing} is not; fix: set both, or neither")
    if args.report is not None and args.report.is_dir():
        raise UsageError(f"--report: {args.report} is a folder; fix: name a file")
    if options.out_dir is not None:
        _writable_folder(options.out_dir, "--out")
    if args.report is not None:
        _writable_folder(args.report.parent, "--report")


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
    build = settings.build_settings(
        project, args.base_image, args.cache_scope, release=args.release
    )
    _preflight(args, options, build)
    cache = ResultCache(project.root, build.cache_scope, read=options.use_cache)
    base = registry.resolve(build.base_image)
    if base is None:
        # Without the base image's digest a stored result cannot be trusted to match.
        log.warning("base_image_unresolved", base_image=build.base_image, result_cache="off")
        cache.read = cache.write = False
    base_ref = base or build.base_image
    # built from the digest that keys the results, not from a tag that may move meanwhile
    build = dataclasses.replace(build, base_image=base_ref)
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
    release = None
    if todo:
        import anyio

        done, release = anyio.run(_engine_run, project, todo, build, options, cache, args.verbose)
        built = {r.service: r for r in done}
    results = [replayed.get(s.name) or built[s.name] for s in services]
    for result in results:
        report.log_line(result)
    elapsed = time.monotonic() - started
    print(report.table(results))
    if release is not None:
        print(release.summary())
    print(f"wall time {elapsed:.1f}s")
    report.write_step_summary(results)
    if args.report:
        extra: dict[str, Any] = {
            "revision": build.provenance.revision,
            "version": build.provenance.release or None,
            "cache_scope": build.cache_scope,
            "base_image": base_ref,
            "wall_time": round(elapsed, 2),
        }
        if release is not None:
            extra["release"] = release.as_dict()
        report.write_json(results, args.report, extra)
    complete = release is None or release.complete
    return 0 if all(r.ok for r in results) and complete else 1


def _check_attestations(
    client: Any,  # noqa: ANN401 - referrers.Client, imported lazily
    repository: str,
    digest: str,
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Every SBOM and provenance referring to ``digest``, and what is wrong with them (an
    artifact that is no JSON document of the expected shape is a problem, not a crash)."""
    from pipeline.edges.publish import PROVENANCE_TYPE, SBOM_TYPE
    from pipeline.supply import attest

    found: dict[str, list[dict[str, Any]]] = {SBOM_TYPE: [], PROVENANCE_TYPE: []}
    problems = []
    for desc in client.referrers(repository, digest):
        kind = desc.get("artifactType") if isinstance(desc, dict) else None
        if kind not in found:
            continue
        try:
            manifest = json.loads(client.manifest(repository, desc["digest"])[0])
            if manifest.get("subject", {}).get("digest") != digest:
                problems.append(f"artifact {desc['digest']} refers to another image")
                continue
            doc = json.loads(client.blob(repository, manifest["layers"][0]["digest"]))
            problem = attest.problem(doc, desc["digest"], digest, kind == PROVENANCE_TYPE)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            problems.append(f"artifact {desc.get('digest')} is malformed ({exc!r})")
            continue
        if problem:
            problems.append(problem)
            continue
        found[kind].append(doc)
    for kind, what in ((PROVENANCE_TYPE, "provenance"), (SBOM_TYPE, "SBOM")):
        if not found[kind]:
            problems.append(f"no {what} refers to this image")
    return found, problems


def _describe(provenance: dict[str, Any], sbom: dict[str, Any]) -> list[str]:
    predicate = provenance["predicate"]
    params = predicate["buildDefinition"]["externalParameters"]
    run = predicate["runDetails"]
    lines = [
        f"service  {params['service']} (tier {params['tier']}), version {params['version']}",
        (
            f"built by {run['builder']['id']}, {run['metadata']['startedOn']} to "
            f"{run['metadata']['finishedOn']} (pipeline {run['builder']['version']['pipeline']})"
        ),
        "from:",
    ]
    for dep in predicate["buildDefinition"]["resolvedDependencies"]:
        (algorithm, value), *_ = dep["digest"].items()
        lines.append(f"  {dep.get('uri') or dep.get('name', '?')} {algorithm}:{value}")
    components = sbom.get("components", [])
    python = sorted(f"{c['name']} {c['version']}" for c in components if "pkg:pypi/" in c["purl"])
    debian = [c for c in components if "pkg:deb/" in c["purl"]]
    lines.append(f"contains: {len(python)} Python distributions, {len(debian)} Debian packages")
    lines.append(f"  python: {', '.join(python)}")
    return lines


def verify(ref: str, username: str | None) -> int:
    """Check the attestations of an image in its registry and say what it is made of."""
    from pipeline.edges import referrers

    if not settings.IMAGE_REFERENCE.match(ref):
        raise UsageError(
            f"verify: {ref!r} is not an image reference, e.g. ghcr.io/acme/users:latest"
        )
    parsed = registry.Reference.parse(ref)
    client = referrers.Client(
        parsed.registry, username, os.environ.get(settings.PASSWORD_ENV) if username else None
    )
    repository = parsed.repository
    try:
        digest = client.manifest(repository, parsed.reference)[2]
        found, problems = _check_attestations(client, repository, digest)
    except referrers.RegistryError as exc:
        print(f"verify: {ref}: {exc}", file=sys.stderr)
        return 1
    print(f"image    {parsed.registry}/{repository}@{digest}")
    if problems:
        for problem in problems:
            print(f"FAILED   {problem}", file=sys.stderr)
        return 1
    from pipeline.edges.publish import PROVENANCE_TYPE, SBOM_TYPE

    provenance = found[PROVENANCE_TYPE][-1]
    try:
        # a commit with no public source (a local-path remote) is named, not located
        for dep in provenance["predicate"]["buildDefinition"]["resolvedDependencies"]:
            dep.setdefault("uri", f"({dep.get('name', 'unnamed')})")
        described = _describe(provenance, found[SBOM_TYPE][-1])
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        print(f"FAILED   the provenance lacks {exc} (or has it in another shape)", file=sys.stderr)
        return 1
    print("\n".join(described))
    print("verified: every attestation refers to this image and names its digest")
    return 0


def carry(args: argparse.Namespace, project: Project) -> int:
    """``cache export DIR`` / ``cache import DIR``: the scope's caches to or from a folder.
    Every check of the folder (and of an export's every archive) is made on the host before
    an engine session starts."""
    import anyio

    from pipeline.edges import carry as carried

    build = settings.build_settings(project, args.base_image, args.cache_scope)
    scope = carried.scope_name(build.cache_scope, "--cache-scope (or PIPELINE_CACHE_SCOPE)")
    if args.action == "import":
        fallback = args.fallback_scope
        if fallback:
            fallback = carried.scope_name(fallback, "--fallback-scope")
        found = carried.source(args.folder, scope, fallback)
        if found is None:
            print(f"nothing to import: no export of {scope} or {fallback} in {args.folder}")
            return 0
        checked = carried.check(found)
    else:
        carried.check_target(args.folder, scope, args.max_size_mb)

    async def work() -> None:
        async with engine_session(args.verbose):
            if args.action == "export":
                manifest = await carried.export(build, args.folder, args.max_size_mb)
                total = sum(manifest["sizes"].values()) / 1e6
                left = ", ".join(manifest["left_out"]) or "nothing"
                print(f"exported {scope}: {total:.1f} MB, left out: {left}")
            else:
                await carried.import_(build, checked)
                print(f"imported {checked.folder} into scope {scope}")

    anyio.run(work)
    return 0
