"""The commands behind the CLI: ``plan`` (no engine) and a run (build, export, publish): what
each service needs, the engine only if some service needs it, then the results."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core import jobs, settings
from pipeline.core.doctor import Finding
from pipeline.core.errors import PipelineError, UsageError
from pipeline.core.log import get_logger
from pipeline.core.names import IMAGE_REFERENCE
from pipeline.core.options import chosen as resolve_options
from pipeline.edges import history, registry, report, resultcache
from pipeline.edges.pool import MEMBER_ENV as POOL_MEMBER
from pipeline.edges.resultcache import ResultCache
from pipeline.edges.resultstore import Layered

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import anyio

    from pipeline.core.model import Project, Service
    from pipeline.core.options import Chosen
    from pipeline.core.outcomes import Result
    from pipeline.core.placement import Engine
    from pipeline.core.settings import BuildSettings, RunOptions
    from pipeline.edges.pool import PoolRun
    from pipeline.edges.publish import Release
    from pipeline.supply.kinds import Kind


def load(root: Path) -> Project:
    """The project under ``root``, with what git ignores there."""
    from pipeline.core import project
    from pipeline.edges import git

    return project.load(root, git.ignored_paths(root))


def build_settings(
    project: Project,
    base_image: str | None = None,
    cache_scope: str | None = None,
    environ: Mapping[str, str] | None = None,
    release: str | None = None,
    chosen: Chosen | None = None,
) -> BuildSettings:
    """The run's builder settings: its options (``chosen``, else these arguments > the
    environment) > the config file, with what git says of the project's commit."""
    from pipeline.edges import git

    env = os.environ if environ is None else environ
    if chosen is None:
        given = {"base_image": base_image, "cache_scope": cache_scope, "release": release}
        chosen = resolve_options("build", given, env, only=given)
    prov = git.read_provenance(
        project.root, project.spec.source_url, chosen.values.get("release"), project.ignored
    )
    return settings.build_settings(project, prov, chosen, env)


async def _engine_run(
    project: Project,
    work: list[jobs.Job],
    build: BuildSettings,
    options: RunOptions,
    cache: Layered,
    verbose: bool,
    selected: Sequence[Service],
) -> tuple[list[Result], Release | None]:
    """The engine part of a run, cancelled cleanly by Ctrl-C or a CI runner's SIGTERM: every
    job built, each result recorded as it comes, each image delivered; then the release's
    moving tags."""
    import anyio

    from pipeline.edges import publish
    from pipeline.edges.deliver import Delivery
    from pipeline.engine import connection, runner  # the engine's SDK only from here on

    outcome: list[Result] = []
    interrupted = False
    target = publish.target_for(options)
    deliver = Delivery(project, options.out_dir, target)

    def record(job: jobs.Job, result: Result) -> None:
        jobs.record(job, result, cache, tested=options.test)

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
            kept = resultcache.ignored_folder(project.root / resultcache.FOLDER) / "engine"
            async with connection.engine_session(verbose, kept):
                outcome = await runner.run(project, work, build, options, deliver, record, selected)
            tg.cancel_scope.cancel()
    except* PipelineError as group:
        raise group.exceptions[0] from None  # one expected error, said as such
    if interrupted:
        raise KeyboardInterrupt
    if target is None or os.environ.get(POOL_MEMBER):  # a share leaves the tags to its run
        return outcome, None
    return await publish.move_tags(outcome, work, target)


async def build(
    project: Project,
    services: Sequence[Service],
    settings: BuildSettings,
    options: RunOptions,
) -> list[Result]:
    """Build, check and deliver these services now, replaying and recording nothing: for
    library use inside an engine connection (the CLI's runs replay)."""
    from pipeline.edges import publish
    from pipeline.edges.deliver import Delivery
    from pipeline.engine import runner

    cache = ResultCache(project.root, settings.cache_scope, read=False, write=False)
    work = jobs.plan(project, services, settings, settings.base_image, cache)
    deliver = Delivery(project, options.out_dir, publish.target_for(options))
    return await runner.run(project, work, settings, options, deliver)


def _history_changes(root: Path, scope: str, now: history.Run) -> list[history.Change]:
    """This run against the last run of its scope, and of main's (when it is another)."""
    found: list[history.Change] = []
    for against, name in (("this scope", scope), ("main", "main")):
        if against == "main" and scope == "main":
            break
        found += history.changes(now, history.last(root, name), against)
    return found


def history_of(chosen: Chosen, project: Project, service: str) -> int:
    """``pipeline history SERVICE``: the service's figures in the scope's recorded runs."""
    project.select([service], (), None, None)  # an unknown service is a usage error
    scope = build_settings(project, chosen=chosen).cache_scope
    runs = history.read(project.root, scope)
    if not any(service in run.services for run in runs):
        print(f"no run of scope {scope} has built {service} yet")
        return 0
    print(history.series(runs, service))
    print(f"scope {scope}: the last {len(runs)} runs are kept (at most {history.KEEP})")
    return 0


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


def _preflight(chosen: Chosen, options: RunOptions, build: BuildSettings) -> None:
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
    if prov.shallow:
        get_logger().warning(
            "shallow_clone",
            project=str(build.root),
            detail="git has no history before the oldest commit of this clone: images "
            "unchanged since then name it, and are built anew at every commit; "
            "fix: fetch the history (actions/checkout: fetch-depth: 0)",
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
    reports = {"--report": chosen.report, "--report-html": chosen.report_html}
    for flag, path in reports.items():
        if path is not None and path.is_dir():
            raise UsageError(f"{flag}: {path} is a folder; fix: name a file")
    if options.out_dir is not None:
        _writable_folder(options.out_dir, "--out")
    for flag, path in reports.items():
        if path is not None:
            _writable_folder(path.parent, flag)


def run(chosen: Chosen, project: Project, services: list[Service]) -> int:
    log = get_logger()
    started, began = time.monotonic(), time.time()
    options = settings.run_options(chosen)
    if chosen.command == "publish" and not options.publish_to:
        raise UsageError("publish needs --registry (or PIPELINE_REGISTRY), e.g. ghcr.io/acme")
    build = build_settings(project, chosen=chosen)
    _preflight(chosen, options, build)
    cache = _result_store(chosen, project.root, build.cache_scope, options.use_cache)
    base = registry.resolve(build.base_image)
    if base is None:
        # Without the base image's digest a stored result cannot be trusted to match.
        log.warning("base_image_unresolved", base_image=build.base_image, result_cache="off")
        cache.read = cache.write = False
    base_ref = base or build.base_image
    # built from the digest that keys the results, not from a tag that may move meanwhile
    build = dataclasses.replace(build, base_image=base_ref)
    drafts = jobs.draft(project, services, build, base_ref)
    if cache.shared is not None and cache.read:  # every entry asked of the registry at once
        cache.prefetch(item for job in drafts for item in jobs.wanted(job))
    work = [jobs.settle(job, cache) for job in drafts]
    log.info(
        "run_started",
        command=chosen.command,
        services=len(services),
        base_image=base_ref,
        cache_scope=build.cache_scope,
        revision=build.provenance.revision[:12],
        jobs=options.jobs or "the engine machine's logical CPUs",
    )
    replayed = {j.service.name: r for j in work if (r := jobs.replay(j, cache, options))}
    todo = [j for j in work if j.service.name not in replayed]
    built: dict[str, Result] = {}
    release = None
    pooled: PoolRun | None = None
    try:
        if todo:
            import anyio

            why = {j.service.name: tuple(jobs.changes(j, cache)) for j in todo}  # before records
            engines = chosen.values.get("engines") or _configured_pool(project)
            if len(engines) > 1:
                done, release, pooled = _pool_run(chosen, todo, build, options, engines)
            else:
                done, release = anyio.run(
                    _engine_run, project, todo, build, options, cache, chosen.verbose, services
                )
            built = {r.service: dataclasses.replace(r, changed=why[r.service]) for r in done}
    finally:
        cache.close()  # the entries still being pushed to the cache registry
    if cache.shared is not None:
        log.info(
            "cache_registry",
            registry=cache.shared.where,
            found=cache.shared.found,
            written=cache.shared.written,
        )
    results = [replayed.get(s.name) or built[s.name] for s in services]
    for result in results:
        report.log_line(result)
    elapsed = time.monotonic() - started
    if os.environ.get(POOL_MEMBER):
        # one engine's share of a pooled run: its report only; the run says the rest
        if chosen.report:
            report.write_json(results, chosen.report, {"cache_scope": build.cache_scope})
        return 0 if all(r.ok for r in results) else 1
    summary = {"started": began, "wall": elapsed}
    _summarize(chosen, project, build, results, (release, pooled), summary)
    complete = release is None or release.complete
    return 0 if all(r.ok for r in results) and complete else 1


# what a share of a pooled run is given by the run itself (its services by name), or must not
# do (reports, history and warnings are the run's)
_NOT_SHARED = frozenset(
    {"tier", "changed_since", "report", "report_html", "growth_warning", "engines"}
)


def _share_options(chosen: Chosen, build: BuildSettings) -> list[str]:
    """The run's options as a share's command line: the same scope and base (by digest), and
    every other option the run was given."""
    from pipeline.core.options import for_command

    argv = ["--project-dir", str(build.root), "--cache-scope", build.cache_scope]
    argv += ["--base-image", build.base_image]
    taken = {"project_dir", "cache_scope", "base_image"} | _NOT_SHARED
    for option in for_command(chosen.command):
        value = chosen.values.get(option.dest)
        if option.dest in taken or value is None or value is False or value == option.default:
            continue
        if option.flag:
            argv.append(option.flags[-1])
        elif option.repeat:
            for each in value:
                argv += [option.flags[-1], str(each)]
        else:
            argv += [option.flags[-1], str(value)]
    return argv


def _configured_pool(project: Project) -> list[Engine]:
    from pipeline.core import placement

    text = project.spec.engines or ""
    return placement.parse(text, "engines") if text else []


def _pool_run(
    chosen: Chosen,
    todo: list[jobs.Job],
    build: BuildSettings,
    options: RunOptions,
    engines: list[Engine],
) -> tuple[list[Result], Release | None, PoolRun]:
    """The run's work spread over a pool of engines, each share the CLI itself; then, once
    every share is done, the release's moving tags."""
    import anyio

    from pipeline.edges import pool, publish
    from pipeline.engine import enginecheck

    def alive(engine: Engine) -> bool:
        env = {k: v for k, v in os.environ.items() if k != enginecheck.SESSION_PORT}
        try:
            enginecheck.require_engine({**env, enginecheck.RUNNER_HOST: engine.url})
        except enginecheck.EngineUnreachableError:
            return False
        return True

    argv = _share_options(chosen, build)
    results, pooled = pool.run(engines, todo, chosen.command, argv, alive)
    target = publish.target_for(options)
    if target is None:
        return results, None, pooled
    moved, release = anyio.run(publish.move_tags, results, todo, target)
    return moved, release, pooled


def _result_store(chosen: Chosen, root: Path, scope: str, use_cache: bool) -> Layered:
    """The run's result cache: the local one, then the cache registry's when one is named."""
    local = ResultCache(root, scope, read=use_cache)
    ref = chosen.values.get("cache_registry")
    if not ref:
        return Layered(local, None)
    from pipeline.edges.referrers import Client
    from pipeline.edges.resultstore import RegistryStore

    user = chosen.values.get("registry_username")
    password = os.environ.get(settings.PASSWORD_ENV) if user else None
    reads = (scope, chosen.values.get("fallback_scope") or "main")
    write = chosen.values.get("cache_registry_mode") != "read"
    shared = RegistryStore(ref, scope, reads, write, lambda host: Client(host, user, password))
    return Layered(local, shared)


def _summarize(
    chosen: Chosen,
    project: Project,
    build: BuildSettings,
    results: list[Result],
    delivered: tuple[Release | None, PoolRun | None],
    times: dict[str, float],
) -> None:
    """The run's history entry and its summary, printed last; then the step summary and the
    reports asked for."""
    log = get_logger()
    release, pooled = delivered
    began, elapsed = times["started"], times["wall"]
    base_ref = build.base_image
    now = history.Run.of(results, began, build.provenance.revision, chosen.command)
    changes = _history_changes(project.root, build.cache_scope, now)
    grown = [c for c in changes if (c.grown or 0.0) * 100 > chosen.growth_warning]
    for change in grown:
        log.warning(
            "image_grew", service=change.service, against=change.against, share=change.grown
        )
    history.append(project.root, build.cache_scope, now)
    print(report.table(results))
    if release is not None:
        print(release.summary())
    if pooled is not None:
        print(pooled.summary())
    for change in grown:
        print(f"warning: {change.warning()}")
    print(f"wall time {elapsed:.1f}s")
    report.write_step_summary(results)
    extra: dict[str, Any] = {
        "command": chosen.command,
        "revision": build.provenance.revision,
        "version": build.provenance.release or None,
        "cache_scope": build.cache_scope,
        "base_image": base_ref,
        "started": round(began, 3),
        "wall_time": round(elapsed, 2),
    }
    if release is not None:
        extra["release"] = release.as_dict()
    if pooled is not None:
        extra["pool"] = pooled.as_dict()
    extra["history"] = [c.as_dict() for c in changes]
    if chosen.report:
        report.write_json(results, chosen.report, extra)
    if chosen.report_html:
        from pipeline.edges import htmlreport

        htmlreport.write(results, chosen.report_html, extra)


def _check_attestations(
    client: Any,  # noqa: ANN401 - referrers.Client, imported lazily
    repository: str,
    digest: str,
) -> tuple[dict[Kind, list[dict[str, Any]]], list[str]]:
    """Every artifact of a known kind referring to ``digest``, and what is wrong with them (an
    artifact that is no JSON document of the expected shape is a problem, not a crash)."""
    from pipeline.supply import kinds

    found: dict[Kind, list[dict[str, Any]]] = {kind: [] for kind in kinds.KINDS}
    problems = []
    for desc in client.referrers(repository, digest):
        kind = kinds.by_media_type(desc.get("artifactType") if isinstance(desc, dict) else None)
        if kind is None:
            continue
        try:
            manifest = json.loads(client.manifest(repository, desc["digest"])[0])
            if manifest.get("subject", {}).get("digest") != digest:
                problems.append(f"artifact {desc['digest']} refers to another image")
                continue
            doc = json.loads(client.blob(repository, manifest["layers"][0]["digest"]))
            problem = kind.problem(doc, desc["digest"], digest)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            problems.append(f"artifact {desc.get('digest')} is malformed ({exc!r})")
            continue
        if problem:
            problems.append(problem)
            continue
        found[kind].append(doc)
    problems += [f"no {kind.name} refers to this image" for kind, docs in found.items() if not docs]
    return found, problems


def verify(ref: str, username: str | None) -> int:
    """Check the attestations of an image in its registry and say what it is made of."""
    from pipeline.edges import referrers

    if not IMAGE_REFERENCE.match(ref):
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
    described = []
    # who made it and from what first, then what it holds: the kinds in reverse
    for kind in reversed(found):
        try:
            described += kind.describe(found[kind][-1])
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            print(
                f"FAILED   the {kind.name} lacks {exc} (or has it in another shape)",
                file=sys.stderr,
            )
            return 1
    print("\n".join(described))
    print("verified: every attestation refers to this image and names its digest")
    return 0


def carry(chosen: Chosen, action: str, folder: Path, project: Project) -> int:
    """``cache export DIR`` / ``cache import DIR``: the scope's caches to or from a folder.
    Every check of the folder (and of an export's every archive) is made on the host before
    an engine session starts."""
    import anyio

    from pipeline.edges import carry as carried
    from pipeline.engine import connection, volumes

    build = build_settings(project, chosen=chosen)
    scope = build.cache_scope  # checked as an option, or as the config's, or made from a branch
    if action == "import":
        fallback = chosen.fallback_scope
        found = carried.source(folder, scope, fallback)
        if found is None:
            print(f"nothing to import: no export of {scope} or {fallback} in {folder}")
            return 0
        checked = carried.check(found)
    else:
        carried.check_target(folder, scope, chosen.max_size_mb)

    async def work() -> None:
        async with connection.engine_session(chosen.verbose):
            if action == "export":
                manifest = await carried.export(build, folder, chosen.max_size_mb, volumes.pack)
                total = sum(manifest["sizes"].values()) / 1e6
                left = ", ".join(manifest["left_out"]) or "nothing"
                print(f"exported {scope}: {total:.1f} MB, left out: {left}")
            else:
                await carried.import_(build, checked, volumes.unpack)
                print(f"imported {checked.folder} into scope {scope}")

    anyio.run(work)
    return 0


DISK_FLOOR_GB = 2.0  # a run writes images, tarballs and its result cache beside the project
ENGINE_WAIT_S = 10.0


def doctor(chosen: Chosen, root: Path | None) -> int:
    """``pipeline doctor``: every piece a run needs, one line each, with the fix for each
    problem; exit 1 when there is one. Reads only; the engine is asked in a session of its
    own, the registries once each, all at once."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.core.doctor import render

    def config() -> tuple[list[Finding], Project | None]:
        from pipeline.core.locate import find_root

        try:
            project = load(root or find_root(Path.cwd()))
        except PipelineError as exc:
            problem, _, fix = str(exc).partition("\n  fix: ")
            return [Finding.bad("config", problem, fix)], None
        tiers, services = len(project.tiers), len(project.services)
        return [
            Finding.good("config", f"{project.root}: {services} services, {tiers} tiers")
        ], project

    with ThreadPoolExecutor(max_workers=4) as pool:
        engine = pool.submit(_doctor_engine)
        configured, project = config()
        base = chosen.base_image or (project.spec.base_image if project else None)
        base_found = pool.submit(_doctor_base, base) if base else None
        registry_found = pool.submit(_doctor_registry, chosen) if chosen.registry else None
        findings = [*configured, _doctor_disk(project.root if project else Path.cwd())]
        findings += engine.result()
        findings += [f.result() for f in (base_found, registry_found) if f is not None]
    print(render(findings))
    return 0 if all(f.ok for f in findings) else 1


def _doctor_disk(where: Path) -> Finding:
    import shutil

    free = shutil.disk_usage(where).free / 1e9
    seen = f"{free:.1f} GB free at {where}"
    if free >= DISK_FLOOR_GB:
        return Finding.good("disk", seen)
    return Finding.bad("disk", f"{seen}, under {DISK_FLOOR_GB:.0f} GB", "free some space")


def _doctor_engine() -> list[Finding]:
    """The SDK, the CLI and the engine, and whether they are one generation."""
    from importlib.metadata import version

    import anyio

    from pipeline.core.doctor import generation
    from pipeline.engine import enginecheck

    sdk = version("dagger-io")
    found = [Finding.good("sdk", f"dagger-io {sdk}")]
    match = f"install the CLI of dagger-io {sdk}, or the SDK of its version (pyproject's extras)"
    cli, cli_ok = "", False
    try:
        cli, cli_version = enginecheck.cli_version()
    except enginecheck.EngineUnreachableError as exc:
        problem, _, fix = str(exc).partition("; fix: ")
        found.append(Finding.bad("cli", problem, fix))
    else:
        cli_ok = generation(cli_version) != "0.11"  # v0.11's CLI has no `core` command
        same = generation(cli_version) == generation(sdk)
        seen = f"{cli} {cli_version}" + ("" if same else f", not dagger-io {sdk}'s generation")
        found.append(Finding("cli", ok=same, seen=seen, fix=match))
    where = os.environ.get(enginecheck.RUNNER_HOST) or (
        "dagger run's session" if os.environ.get(enginecheck.SESSION_PORT) else "the CLI's default"
    )

    async def ask() -> str:
        from pipeline.engine.connection import engine_version

        with anyio.fail_after(ENGINE_WAIT_S):
            return await engine_version()

    try:
        enginecheck.require_engine()
        # the CLI's own question when it has one: quicker than importing the SDK for a session
        asked = enginecheck.engine_version_by_cli(cli, ENGINE_WAIT_S) if cli_ok else None
        engine = asked or anyio.run(ask)
    except enginecheck.EngineUnreachableError as exc:
        problem, _, fix = str(exc).partition("; fix: ")
        return [*found, Finding.bad("engine", problem, fix)]
    except TimeoutError:
        fix = "check the engine's logs (here: docker logs of scripts/engine's container)"
        return [
            *found,
            Finding.bad("engine", f"{where} gave no session in {ENGINE_WAIT_S:.0f}s", fix),
        ]
    except Exception as exc:  # noqa: BLE001 - any failure to open a session is the finding
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return [*found, Finding.bad("engine", f"{where}: {first}", enginecheck.START_ONE)]
    same = generation(engine) == generation(sdk)
    seen = f"{engine} at {where}" + ("" if same else f", not dagger-io {sdk}'s generation")
    return [*found, Finding("engine", ok=same, seen=seen, fix=match)]


def _doctor_base(base: str) -> Finding:

    pinned = registry.resolve(base)
    if pinned is None:
        fix = "check the name and that its registry is reachable (here: scripts/engine up)"
        return Finding.bad("base image", f"{base} does not resolve", fix)
    return Finding.good("base image", pinned)


def _doctor_registry(chosen: Chosen) -> Finding:

    host = chosen.registry.split("/", 1)[0]
    reachable, why = registry.ping(host)
    if not reachable:
        fix = "check the host name, the network, or that the registry runs"
        return Finding.bad("registry", f"{host} does not answer ({why})", fix)
    user, password = chosen.registry_username, os.environ.get(settings.PASSWORD_ENV)
    if user and password:
        return Finding.good("registry", f"{host} answers; credentials given for {user}")
    if why:  # it wants credentials and some are missing: never print what is there
        missing = " and ".join(
            n
            for n, v in (("PIPELINE_REGISTRY_USERNAME", user), (settings.PASSWORD_ENV, password))
            if not v
        )
        return Finding.bad(
            "registry", f"{host} wants credentials; {missing} not set", f"set {missing}"
        )
    return Finding.good("registry", f"{host} answers without credentials")
