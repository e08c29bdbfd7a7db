"""Every option of the command line, declared once: its flag, environment variable, default,
help and check. The CLI's parser is derived from this table (cli.py), and ``chosen`` resolves
each option once per run by precedence: the command line > the environment (PIPELINE_*) >
the default (for some, the project's config decides after that). A value that fails its
check is a usage error naming where it came from (the flag or the variable) and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core import names, placement
from pipeline.core.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping


def _jobs(value: str, where: str) -> int:
    try:
        jobs = int(value)
    except ValueError:
        raise UsageError(
            f"{where}: {value!r} is not a number; fix: give a whole number, e.g. 4"
        ) from None
    if jobs < 1:
        raise UsageError(f"{where} must be at least 1")
    return jobs


def _percent(value: str | float, where: str) -> float:
    try:
        share = float(value)
    except ValueError:
        raise UsageError(
            f"{where}: {value!r} is not a number; fix: give a percentage, e.g. 10"
        ) from None
    if not 0 <= share <= 1000:  # noqa: PLR2004 - a growth over ten times is no warning level
        raise UsageError(
            f"{where}: {share:g} is out of range; fix: give a percentage from 0 to 1000"
        )
    return share


def _scope(value: str, where: str) -> str:
    """A scope names cache volumes and a folder of the result cache: checked as the config's."""
    if not re.match(names.SCOPE_PATTERN, value):
        raise UsageError(
            f"{where}: {value!r} cannot be a cache scope; use 1 to 64 letters, digits, '_', '.' "
            "and '-', not starting with '.', e.g. main or feature-login"
        )
    return value


def _image(value: str, where: str) -> str:
    if not names.IMAGE_REFERENCE.match(value):
        raise UsageError(
            f"{where}: {value!r} is not an image reference; fix: {names.IMAGE_EXAMPLE}"
        )
    return value


# Where publish pushes: a registry host[:port] and an optional namespace, no tag.
REGISTRY_PREFIX = re.compile(rf"^[A-Za-z0-9.-]+(?::[0-9]+)?(?:/{names.IMAGE_COMPONENT})*/?$")


def _registry(value: str, where: str) -> str:
    if not REGISTRY_PREFIX.match(value):
        raise UsageError(
            f"{where}: {value!r} is not a registry and namespace; use e.g. ghcr.io/acme or "
            "localhost:5000/team (lower case, no tag)"
        )
    return value


_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _cache_registry(value: str, where: str) -> str:
    path = value.rstrip("/").partition("/")[2]
    if not path or not REGISTRY_PREFIX.match(value):
        raise UsageError(
            f"{where}: {value!r} is not a registry repository; use e.g. "
            "ghcr.io/acme/pipeline-cache or localhost:5000/cache (lower case, no tag)"
        )
    return value.rstrip("/")


def _mode(value: str, where: str) -> str:
    if value not in CACHE_REGISTRY_MODES:
        raise UsageError(
            f"{where}: {value!r} is no mode; fix: give {' or '.join(CACHE_REGISTRY_MODES)}"
        )
    return value


CACHE_REGISTRY_MODES = ("read-write", "read")


def _engines(value: str, where: str) -> list[placement.Engine]:
    return placement.parse(value, where)


def _tag(value: str, where: str) -> str:
    if not _TAG.match(value):
        raise UsageError(
            f"{where}: {value!r} cannot be an image tag; use letters, digits, '_', '.' and '-' "
            "(at most 128, not starting with '.' or '-'), e.g. 1.4.2"
        )
    return value


def _folder(value: str | Path, where: str) -> Path:
    folder = Path(value)
    if not folder.is_dir():
        raise UsageError(
            f"{where} {folder} is not a directory; fix: name the monorepo's root folder (the "
            "one holding pipeline.toml or [tool.pipeline] in pyproject.toml)"
        )
    return folder


@dataclass(frozen=True)
class Option:
    dest: str  # its name in a run's chosen values
    flags: tuple[str, ...]
    help: str
    commands: frozenset[str]  # the commands that take it
    env: str | None = None  # the environment variable that sets it when the flag is absent
    default: Any = None
    default_text: str = ""  # the default as help shows it, when not the value itself
    check: Callable[[Any, str], Any] | None = None  # (value, where it came from) -> value
    flag: bool = False  # a switch: given or not
    repeat: bool = False  # may be given several times
    type: Callable[[str], Any] | None = None  # argparse's name for it
    metavar: str | None = None
    required: bool = False

    @property
    def shown_help(self) -> str:
        said = [f"env {self.env}"] if self.env else []
        default = self.default_text or (str(self.default) if self.default is not None else "")
        if default:
            said.append(f"default: {default}")
        return f"{self.help} ({'; '.join(said)})" if said else self.help


PROJECT_COMMANDS = frozenset({"plan", "build", "export", "publish"})
BUILDS = frozenset({"build", "export", "publish"})
CACHE = frozenset({"cache"})
DOCTOR = frozenset({"doctor"})
HISTORY = frozenset({"history"})

OPTIONS: tuple[Option, ...] = (
    Option(
        "project_dir",
        ("--project-dir",),
        "the monorepo's root",
        PROJECT_COMMANDS | CACHE | DOCTOR | HISTORY,
        env="PIPELINE_PROJECT_DIR",
        default_text="the nearest folder, from the current one upward, holding pipeline.toml "
        "or [tool.pipeline]",
        check=_folder,
        type=Path,
    ),
    Option(
        "tier",
        ("--tier",),
        "only services of this tier (repeatable)",
        PROJECT_COMMANDS,
        repeat=True,
        default=(),
    ),
    Option(
        "changed_since",
        ("--changed-since",),
        "only services a change since this git commit affects (their folder, their tiers' "
        "requirements, the config)",
        PROJECT_COMMANDS,
        metavar="REF",
    ),
    Option(
        "verbose",
        ("-v", "--verbose"),
        "debug logs and engine progress",
        PROJECT_COMMANDS | CACHE,
        flag=True,
    ),
    Option("json", ("--json",), "print the plan as JSON", frozenset({"plan"}), flag=True),
    Option(
        "jobs",
        ("--jobs",),
        "services built at once",
        BUILDS,
        env="PIPELINE_JOBS",
        default_text="the engine machine's logical CPUs",
        check=_jobs,
    ),
    Option(
        "cache_scope",
        ("--cache-scope",),
        "scope of cache volumes and the result cache",
        PROJECT_COMMANDS | CACHE | HISTORY,
        env="PIPELINE_CACHE_SCOPE",
        default_text="the config's cache_scope, else the git branch",
        check=_scope,
    ),
    Option(
        "base_image",
        ("--base-image",),
        "image every stage starts from, by tag or @sha256 digest",
        PROJECT_COMMANDS | CACHE | DOCTOR,
        env="PIPELINE_BASE_IMAGE",
        default_text="the config's base_image",
        check=_image,
    ),
    Option(
        "no_test",
        ("--no-test",),
        "skip each image's unit, smoke and health tests",
        BUILDS,
        flag=True,
    ),
    Option(
        "no_cache",
        ("--no-cache",),
        "replay nothing from the result cache: build and check every selected service",
        BUILDS,
        flag=True,
    ),
    Option(
        "report", ("--report",), "also write the results as JSON to this file", BUILDS, type=Path
    ),
    Option(
        "growth_warning",
        ("--growth-warning",),
        "warn when an image grew more than this share (percent) since the last run of its "
        "scope or of main",
        BUILDS,
        env="PIPELINE_GROWTH_WARNING",
        default=10.0,
        default_text="10",
        check=_percent,
        metavar="PCT",
    ),
    Option(
        "report_html",
        ("--report-html",),
        "also write a build report to open: one self-contained HTML page (timeline, sizes, "
        "why each service rebuilt)",
        BUILDS,
        env="PIPELINE_REPORT_HTML",
        type=Path,
        metavar="FILE",
    ),
    Option(
        "release",
        ("--version",),
        "the images' version (label, build-info.json, and an immutable tag on publish); "
        "needed to publish outside a git checkout",
        BUILDS,
        env="PIPELINE_VERSION",
        check=_tag,
        metavar="VERSION",
    ),
    Option(
        "out",
        ("--out",),
        "folder for <service>.tar files",
        frozenset({"export"}),
        type=Path,
        required=True,
    ),
    Option(
        "registry",
        ("--registry",),
        "registry and namespace, e.g. ghcr.io/acme",
        frozenset({"publish", "doctor"}),
        env="PIPELINE_REGISTRY",
        check=_registry,
    ),
    Option(
        "registry_username",
        ("--registry-username",),
        "user for the registry and the cache registry (its password only from "
        "PIPELINE_REGISTRY_PASSWORD)",
        BUILDS | frozenset({"verify", "doctor"}),
        env="PIPELINE_REGISTRY_USERNAME",
    ),
    Option(
        "engines",
        ("--engines",),
        "a pool of engines, name=url each, comma-separated (an optional ;weight=N each): "
        "services are placed by their tier, so a tier is built on one engine; an engine that "
        "is down or lost hands its services to the next",
        BUILDS | DOCTOR,
        env="PIPELINE_ENGINES",
        check=_engines,
        metavar="POOL",
    ),
    Option(
        "cache_registry",
        ("--cache-registry",),
        "a registry repository where verified results are shared by every runner and engine: "
        "read from this scope, then the fallback scope; written to this scope only",
        BUILDS,
        env="PIPELINE_CACHE_REGISTRY",
        check=_cache_registry,
        metavar="REF",
    ),
    Option(
        "cache_registry_mode",
        ("--cache-registry-mode",),
        "read-write, or read (pull requests with a read-only token)",
        BUILDS,
        env="PIPELINE_CACHE_REGISTRY_MODE",
        default="read-write",
        check=_mode,
        metavar="MODE",
    ),
    Option(
        "fallback_scope",
        ("--fallback-scope",),
        "the scope read after this one: its cache export (import), its results in the cache "
        "registry (runs)",
        CACHE | BUILDS,
        env="PIPELINE_FALLBACK_SCOPE",
        default="main",
        check=_scope,
    ),
    Option(
        "max_size_mb",
        ("--max-size-mb",),
        "export: at most this many MB; the volumes cheapest to refill are left out first",
        CACHE,
        default=2000.0,
        default_text="2000",
        type=float,
    ),
)


def for_command(command: str) -> list[Option]:
    return [o for o in OPTIONS if command in o.commands]


@dataclass(frozen=True)
class Chosen:
    """A run's options, each resolved once and checked."""

    command: str
    values: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - any option's value
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


def chosen(
    command: str, given: Mapping[str, Any], environ: Mapping[str, str], only: Iterable[str] = ()
) -> Chosen:
    """Each option of ``command``: from ``given`` (what the command line said; None, False or
    empty when it said nothing), else its environment variable (when set and not empty),
    else its default; checked, naming where the value came from. ``only`` limits it to
    those options (all when empty)."""
    wanted = set(only)
    values: dict[str, Any] = {}
    for option in for_command(command):
        if wanted and option.dest not in wanted:
            continue
        value = given.get(option.dest)
        where = option.flags[-1]
        if value is None or value is False or value in ([], ()):
            if option.env and environ.get(option.env):
                value, where = environ[option.env], option.env
            else:
                values[option.dest] = option.default
                continue
        values[option.dest] = option.check(value, where) if option.check else value
    return Chosen(command, values)
