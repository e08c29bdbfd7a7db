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
from typing import TYPE_CHECKING, Any

from pipeline.core import options
from pipeline.core.errors import PipelineError

if TYPE_CHECKING:
    from collections.abc import Sequence


def _with_options(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The command's options, as core/options.py declares them."""
    for option in options.for_command(command):
        kwargs: dict[str, Any] = {"dest": option.dest, "help": option.shown_help}
        if option.flag:
            kwargs["action"] = "store_true"
        elif option.repeat:
            kwargs.update(action="append", default=[])
        else:
            kwargs.update(type=option.type, metavar=option.metavar, required=option.required)
        parser.add_argument(*option.flags, **kwargs)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Build every service of a Python monorepo from shared tiers, on Dagger.",
        epilog="Run under `dagger run python -m pipeline ...`, or with the dagger CLI on PATH.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {
        "plan": {"help": "show tiers, services and what each uploads (no engine)"},
        "build": {"help": "build and test service images"},
        "export": {"help": "build, test and write one OCI tarball per service"},
        "publish": {
            "help": "build, test and push each image under its commit, branch and latest tags",
            "description": (
                "Tags: <commit> and --version (immutable) first, for every selected service; "
                "then, only when every service passed every check and every push succeeded, "
                "the moving tags branch-<branch> and latest (from main or master). An image "
                "any of whose inputs differ from the commit gets only <commit>-dirty. The "
                "password comes only from PIPELINE_REGISTRY_PASSWORD."
            ),
        },
    }
    for command, texts in commands.items():
        one = sub.add_parser(command, help=texts["help"], description=texts.get("description"))
        one.add_argument(
            "services", nargs="*", metavar="SERVICE", help="services to act on (default: all)"
        )
        _with_options(one, command)
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
    _with_options(carry, "cache")
    verify = sub.add_parser(
        "verify",
        help="check an image's SBOM and provenance in its registry and show its origin",
        description="Fetches the attestations that refer to IMAGE (referrers API, or the "
        "sha256-<digest> tag fallback), checks that each names the image's digest, and prints "
        "where the image came from and what it contains. Exit 1 when any check fails.",
    )
    verify.add_argument("image", metavar="IMAGE", help="e.g. ghcr.io/acme/users:latest")
    _with_options(verify, "verify")
    past = sub.add_parser(
        "history",
        help="a service's size, time and digest in each recorded run of the scope",
        description="Each build, export or publish records every service's figures in its "
        "cache scope (.pipeline/cache/<scope>/history.jsonl, the last 200 runs). This prints "
        "one service's, oldest first, with each run's change in size.",
    )
    past.add_argument("service", metavar="SERVICE")
    _with_options(past, "history")
    doctor = sub.add_parser(
        "doctor",
        help="check that everything a run needs is there, one line each",
        description="Checks the config, disk space, the Dagger SDK, CLI and engine (reachable, "
        "and all of one generation), the base image (resolvable) and, with --registry, the "
        "registry (reachable, credentials present; never printed). Exit 1 on a problem, "
        "each named with its fix.",
    )
    _with_options(doctor, "doctor")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    # Imported after parsing: --help, usage errors and a replayed plan never load pydantic.
    from pipeline.core.locate import find_root
    from pipeline.edges import plan

    chosen = options.chosen(args.command, vars(args), os.environ)
    if args.command in ("verify", "doctor"):
        # verify: an image in a registry, no project needed; doctor: a broken config is one
        # of its findings
        from pipeline import session

        if args.command == "verify":
            status = session.verify(args.image, chosen.registry_username)
        else:
            status = session.doctor(chosen, chosen.project_dir)
        return status
    root = chosen.project_dir or find_root(Path.cwd())
    if args.command == "plan" and not chosen.changed_since:
        replayed = plan.replay(root, args.services, chosen.tier)
        if replayed is not None:
            print(plan.render(replayed, chosen.json))
            return 0

    from pipeline import session
    from pipeline.core import inputs
    from pipeline.core.log import configure
    from pipeline.edges.git import changed_since

    project = session.load(root)
    if args.command in ("cache", "history"):
        if args.command == "history":
            status = session.history_of(chosen, project, args.service)
        else:
            configure(verbose=chosen.verbose)
            status = session.carry(chosen, args.action, args.folder, project)
        return status
    changed, reads = None, None
    if chosen.changed_since:
        changed = changed_since(project.root, chosen.changed_since)
        reads = inputs.reads(project, session.build_settings(project, chosen=chosen))
    services = project.select(args.services, chosen.tier, changed, reads)
    if args.command == "plan":
        whole = plan.record(project)  # the next plan replays it
        print(plan.render(plan.of(whole, services), chosen.json))
        return 0
    if not services:
        print(f"nothing to do: no service is affected by changes since {chosen.changed_since}")
        return 0
    configure(verbose=chosen.verbose)
    status = session.run(chosen, project, services)
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
