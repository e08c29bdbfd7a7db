"""argv -> settings -> what each service needs -> (engine, only if needed) -> results -> exit.

Exit codes: 0 every service ok, 1 a service failed, 2 usage or config error, 130 interrupted.
The engine's SDK is imported only when some service needs engine work: ``plan``, ``--help``
and a run whose results all replay from the result cache never load it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.errors import PipelineError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "services", nargs="*", metavar="SERVICE", help="services to act on (default: all)"
    )
    common.add_argument(
        "--project-dir",
        type=Path,
        default=None,
        help="the monorepo's root (env PIPELINE_PROJECT_DIR; default: the nearest folder, "
        "from the current one upward, holding pipeline.toml or [tool.pipeline])",
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
    engine.add_argument("--jobs", help="services built at once (env PIPELINE_JOBS; default 4)")
    engine.add_argument(
        "--cache-scope",
        help="scope of cache volumes and the result cache (env PIPELINE_CACHE_SCOPE; "
        "default: the git branch)",
    )
    engine.add_argument(
        "--base-image",
        help="image every stage starts from, by tag or @sha256 digest (env PIPELINE_BASE_IMAGE;"
        " default: from the config)",
    )
    engine.add_argument(
        "--no-test", action="store_true", help="skip each image's unit, smoke and health tests"
    )
    engine.add_argument(
        "--no-cache",
        action="store_true",
        help="replay nothing from the result cache: build and check every selected service",
    )
    engine.add_argument("--report", type=Path, help="also write the results as JSON to this file")
    engine.add_argument(
        "--version",
        dest="release",
        metavar="VERSION",
        help="the images' version (label, build-info.json, and an immutable tag on publish; "
        "env PIPELINE_VERSION); needed to publish outside a git checkout",
    )

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
            "Tags: <commit> and --version (immutable) first, for every selected service; then, "
            "only when every service passed every check and every push succeeded, the moving "
            "tags branch-<branch> and latest (from main or master). An image any of whose "
            "inputs differ from the commit gets only <commit>-dirty. The password comes only "
            "from PIPELINE_REGISTRY_PASSWORD and reaches the engine as a Dagger secret."
        ),
    )
    publish.add_argument(
        "--registry", help="registry and namespace, e.g. ghcr.io/acme (env PIPELINE_REGISTRY)"
    )
    publish.add_argument(
        "--registry-username", help="user for the registry (env PIPELINE_REGISTRY_USERNAME)"
    )
    carry = sub.add_parser(
        "cache",
        help="carry the scope's cache volumes and result cache to or from a folder",
        description="export writes DIR/<scope>/ (the uv, pip and apt cache volumes and the "
        "result cache, bounded by --max-size-mb); import fills this run's scope from "
        "DIR/<scope>, else from the fallback scope's export, after checking it whole (its "
        "manifest and every member of every archive: no absolute or '..' paths, no link "
        "leaving it, no device files; a damaged export is refused and nothing is imported). "
        "For CI caches such as actions/cache, so a fresh runner's engine starts warm.",
    )
    carry.add_argument("action", choices=["export", "import"])
    carry.add_argument("folder", type=Path, metavar="DIR")
    carry.add_argument(
        "--project-dir", type=Path, default=None, help="the monorepo's root (as for build)"
    )
    carry.add_argument("--cache-scope", help="the scope (default: as for build)")
    carry.add_argument("--base-image", help="the image the helper containers run (as for build)")
    carry.add_argument(
        "--fallback-scope",
        default="main",
        help="import: the scope whose export is used when this scope has none (default: main)",
    )
    carry.add_argument(
        "--max-size-mb",
        type=float,
        default=2000,
        help="export: at most this many MB; the volumes cheapest to refill are left out "
        "first (default: 2000)",
    )
    carry.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    verify = sub.add_parser(
        "verify",
        help="check an image's SBOM and provenance in its registry and show its origin",
        description="Fetches the attestations that refer to IMAGE (referrers API, or the "
        "sha256-<digest> tag fallback), checks that each names the image's digest, and prints "
        "where the image came from and what it contains. Exit 1 when any check fails.",
    )
    verify.add_argument("image", metavar="IMAGE", help="e.g. ghcr.io/acme/users:latest")
    verify.add_argument(
        "--registry-username",
        help="user for a private registry (env PIPELINE_REGISTRY_USERNAME; password from "
        "PIPELINE_REGISTRY_PASSWORD)",
    )
    return parser


def _project_dir(args: argparse.Namespace, find_root: Callable[[Path], Path]) -> Path:
    """The project's root: --project-dir, else PIPELINE_PROJECT_DIR (each checked, naming
    the one it came from), else the nearest folder with a config."""
    if args.project_dir is not None:
        given, folder = "--project-dir", Path(args.project_dir)
    elif os.environ.get("PIPELINE_PROJECT_DIR"):
        given, folder = "PIPELINE_PROJECT_DIR", Path(os.environ["PIPELINE_PROJECT_DIR"])
    else:
        return find_root(Path.cwd())
    if not folder.is_dir():
        raise UsageError(
            f"{given} {folder} is not a directory; fix: name the monorepo's root folder (the "
            "one holding pipeline.toml or [tool.pipeline] in pyproject.toml)"
        )
    return folder


def _dispatch(args: argparse.Namespace) -> int:
    # Imported after parsing: --help, usage errors and a replayed plan never load pydantic.
    from pipeline.core.locate import find_root
    from pipeline.edges import plan

    if args.command == "plan" and not args.changed_since:
        replayed = plan.replay(_project_dir(args, find_root), args.services, args.tier)
        if replayed is not None:
            print(plan.render(replayed, args.json))
            return 0

    from pipeline import session
    from pipeline.core import inputs, settings
    from pipeline.core.log import configure
    from pipeline.edges.git import changed_since

    if args.command == "verify":  # an image in a registry: no project needed
        user = args.registry_username or os.environ.get("PIPELINE_REGISTRY_USERNAME")
        return session.verify(args.image, user)
    project = session.load(_project_dir(args, find_root))
    if args.command == "cache":
        configure(verbose=args.verbose)
        return session.carry(args, project)
    changed, reads = None, None
    if args.changed_since:
        changed = changed_since(project.root, args.changed_since)
        reads = inputs.reads(project, session.build_settings(project))
    services = project.select(args.services, args.tier, changed, reads)
    if args.command == "plan":
        whole = plan.record(project)  # the next plan replays it
        print(plan.render(plan.of(whole, services), args.json))
        return 0
    settings.jobs_from(args.jobs or os.environ.get("PIPELINE_JOBS"))
    if not services:
        print(f"nothing to do: no service is affected by changes since {args.changed_since}")
        return 0
    configure(verbose=args.verbose)
    status = session.run(args, project, services)
    plan.record(project)  # a run that got this far read the project as plan would
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except PipelineError as exc:
        print(f"pipeline: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pipeline: interrupted", file=sys.stderr)
        return 130
