"""Pure builders: data and Dagger objects in, lazy Containers and Directories out.

Layer plan of a service image, bottom to top:
  base image · runtime OS (non-root user) · per tier: its apt packages, its venv layer
  · the service's apt packages · the service's own dependencies (a diff over its tier's venv)
  · the service's source with build-info.json (last, so an edit changes only that layer).
Every service of a tier starts from the same tier Container, so their tier layers are the
same layers, byte for byte.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagger
from dagger import dag

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from pipeline.graph import Project, Service, Tier
    from pipeline.meta import Provenance

VENV = "/opt/venv"
APP = "/app"
UV_VERSION = "0.13.9"
# Files copied out of a builder carry build-time mtimes; one fixed time (1980-01-01, the zip
# epoch) makes venv, account and source layers byte-identical for the same inputs on any
# machine. Layers of apt installs are not: dpkg stamps its database with the time.
FIXED_MTIME = 315532800
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_EXCLUDES = ("**/__pycache__", "**/*.pyc", "**/.venv", "**/.pytest_cache", "**/.git")


@dataclass(frozen=True)
class BuildSettings:
    root: Path  # the project root; service folders are named relative to it
    base_image: str
    cache_scope: str
    user: str
    uid: int
    provenance: Provenance
    # A package index URL with credentials, as a secret: set in the builder's environment
    # only for its execs, never in a layer, an image config or a log.
    index_url: dagger.Secret | None = None
    compile_bytecode: bool = True


def cache(scope: str, tool: str) -> dagger.CacheVolume:
    """A cache volume of one tool, named with the scope so scopes never mix."""
    return dag.cache_volume(f"pipeline-{scope}-{tool}")


def with_apt(packages: Sequence[str], scope: str) -> Callable[[dagger.Container], dagger.Container]:
    """Install Debian packages with apt's caches in volumes: nothing of them reaches a layer."""

    def step(ctr: dagger.Container) -> dagger.Container:
        if not packages:
            return ctr
        locked = dagger.CacheSharingMode.LOCKED
        return (
            ctr.with_mounted_cache("/var/cache/apt", cache(scope, "apt-cache"), sharing=locked)
            .with_mounted_cache("/var/lib/apt/lists", cache(scope, "apt-lists"), sharing=locked)
            .with_mounted_temp("/var/log")  # apt's and dpkg's logs stay out of the image
            .with_env_variable("DEBIAN_FRONTEND", "noninteractive")
            .with_exec(
                [
                    "sh",
                    "-c",
                    "apt-get update -qq && apt-get install -y -qq --no-install-recommends "
                    + shlex.join(packages)
                    + " >/dev/null",
                ]
            )
            .without_env_variable("DEBIAN_FRONTEND")
            .without_mount("/var/cache/apt")
            .without_mount("/var/lib/apt/lists")
            .without_mount("/var/log")
        )

    return step


def builder(settings: BuildSettings, build_apt: Sequence[str] = ()) -> dagger.Container:
    """The build stage: compilers and uv on the base image; never shipped."""
    scope = settings.cache_scope
    ctr = (
        dag.container()
        .from_(settings.base_image)
        .with_(with_apt(["build-essential", *build_apt], scope))
        .with_mounted_cache("/root/.cache/pip", cache(scope, "pip"))
        .with_env_variable("PIP_CERT", SYSTEM_CA)
        .with_env_variable("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .with_exec(["python3", "-m", "venv", "/opt/uv"])
        .with_exec(["/opt/uv/bin/pip", "install", "-q", f"uv=={UV_VERSION}"])
        .with_env_variable("PATH", f"/opt/uv/bin:{SYSTEM_PATH}")
        .with_mounted_cache("/root/.cache/uv", cache(scope, "uv"))
        .with_env_variable("UV_CACHE_DIR", "/root/.cache/uv")
        .with_env_variable("UV_LINK_MODE", "copy")
        .with_env_variable("UV_PYTHON_DOWNLOADS", "never")
        .with_env_variable("UV_SYSTEM_CERTS", "1")
        .with_env_variable("UV_NO_PROGRESS", "1")
    )
    if settings.index_url is not None:
        ctr = ctr.with_secret_variable("UV_INDEX_URL", settings.index_url)
    return ctr


ACCOUNT_FILES = ("passwd", "group", "shadow", "gshadow")


def runtime_os(settings: BuildSettings) -> dagger.Container:
    """The runtime stage's OS: the base image and a non-root user; no compiler, no uv.

    The user is added in a scratch container and only the four account files are taken, with
    fixed mtimes: the layer is the same on every machine (an exec layer would carry the exec's
    file times and useradd's log files)."""
    user, uid = settings.user, str(settings.uid)
    added = (
        dag.container()
        .from_(settings.base_image)
        .with_exec(
            [
                "sh",
                "-c",
                (
                    f"groupadd --gid {uid} {user} && useradd --uid {uid} --gid {uid} "
                    f"--no-create-home --home-dir {APP} --shell /usr/sbin/nologin {user}"
                ),
            ]
        )
    )
    accounts = dag.directory()
    for name in ACCOUNT_FILES:
        accounts = accounts.with_file(name, added.file(f"/etc/{name}"))
    return (
        dag.container()
        .from_(settings.base_image)
        .with_directory("/etc", accounts.with_timestamps(FIXED_MTIME))
        .with_env_variable("PATH", f"{VENV}/bin:{SYSTEM_PATH}")
        .with_env_variable("VIRTUAL_ENV", VENV)
        .with_env_variable("PYTHONUNBUFFERED", "1")
        .with_env_variable("PYTHONDONTWRITEBYTECODE", "1")
    )


# Compiles every .py under a folder that has no .pyc yet, as unchecked-hash pycs: valid
# whatever the files' mtimes (which are normalised), never rewritten for files a lower layer
# already compiled (so a diff holds only new ones), and deterministic with a fixed hash seed.
_COMPILE = """
import importlib.util, os, pathlib, py_compile, sys
mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
for src in sorted(pathlib.Path(sys.argv[1]).rglob("*.py")):
    pyc = importlib.util.cache_from_source(str(src))
    if not os.path.exists(pyc):
        py_compile.compile(str(src), cfile=pyc, dfile=str(src), quiet=2, invalidation_mode=mode)
"""


def with_bytecode(folder: str, python: str) -> Callable[[dagger.Container], dagger.Container]:
    """Precompile ``folder`` so containers start without compiling imports."""

    def step(ctr: dagger.Container) -> dagger.Container:
        return (
            ctr.with_env_variable("PYTHONHASHSEED", "0")
            .with_exec([python, "-c", _COMPILE, folder])
            .without_env_variable("PYTHONHASHSEED")
        )

    return step


def _requirement_path(tier: Tier, index: int) -> str:
    return f"/req/{tier.name}/{index}-{tier.requirements[index].name}"


def tier_venv(
    build: dagger.Container,
    tier: Tier,
    parent: dagger.Directory | None,
    compile_bytecode: bool = True,
) -> dagger.Directory:
    """The tier's whole venv: its parent's venv plus the tier's requirements."""
    ctr = build
    for i, path in enumerate(tier.requirements):
        ctr = ctr.with_mounted_file(_requirement_path(tier, i), dag.host().file(str(path)))
    if parent is None:
        ctr = ctr.with_exec(["uv", "venv", "-q", "--python", "python3", VENV])
    else:
        ctr = ctr.with_directory(VENV, parent)
    for i in range(len(tier.requirements)):
        python = f"{VENV}/bin/python"
        ctr = ctr.with_exec(
            ["uv", "pip", "install", "-q", "--python", python, "-r", _requirement_path(tier, i)]
        )
    if compile_bytecode:
        ctr = ctr.with_(with_bytecode(VENV, f"{VENV}/bin/python"))
    return ctr.directory(VENV)


@dataclass(frozen=True)
class TierImage:
    tier: Tier
    venv: dagger.Directory  # the whole venv, for builders of services on top
    image: dagger.Container  # the runtime image every service of the tier starts from


def tier_images(project: Project, settings: BuildSettings) -> dict[str, TierImage]:
    """Every tier's runtime image, parents first; each child extends its parent's Container."""
    out: dict[str, TierImage] = {}
    for name, tier in project.tiers.items():
        chain = project.chain(name)
        build = builder(settings, [p for t in chain for p in t.spec.build_apt])
        parent = out[tier.spec.extends] if tier.spec.extends else None
        venv = tier_venv(build, tier, parent.venv if parent else None, settings.compile_bytecode)
        # Only what this tier adds goes into its layer; a diff cannot delete, which is why
        # children install on top of their parent's pins instead of replacing them.
        layer = (parent.venv.diff(venv) if parent else venv).with_timestamps(FIXED_MTIME)
        below = parent.image if parent else runtime_os(settings)
        image = below.with_(with_apt(tier.spec.apt, settings.cache_scope)).with_directory(
            VENV, layer
        )
        out[name] = TierImage(tier, venv, image)
    return out


def _constrained_install(requirements: str) -> list[str]:
    """Install on top of the venv at VENV, pinned to what is already there."""
    python = f"{VENV}/bin/python"
    return [
        "sh",
        "-c",
        (
            f"uv pip freeze --python {python} > /tmp/pins.txt && "
            f"uv pip install -q --python {python} -c /tmp/pins.txt {requirements}"
        ),
    ]


def service_venv(
    build: dagger.Container, tier: TierImage, service: Service, compile_bytecode: bool = True
) -> dagger.Directory:
    """The tier's venv plus the service's own dependencies, constrained by the tier's pins so
    a service never silently replaces a tier package."""
    if service.requirements is None:
        return tier.venv
    req = service.requirements
    files = dag.host().directory(str(req.parent), include=[req.name, "uv.lock"])
    ctr = (
        build.with_directory(VENV, tier.venv)
        .with_mounted_directory("/svc", files)
        .with_workdir("/svc")
    )
    if req.name == "pyproject.toml":
        # With a lock file the locked versions are installed; without, the declared ranges.
        script = (
            "mkdir -p /tmp/svc && if [ -f uv.lock ]; then uv export -q --frozen --no-hashes "
            "--no-emit-project --no-dev -o /tmp/svc/requirements.txt; "
            "else cp pyproject.toml /tmp/svc/pyproject.toml; fi"
        )
        ctr = ctr.with_exec(["sh", "-c", script])
        ctr = ctr.with_exec(_constrained_install("-r $(ls /tmp/svc/*)"))
    else:
        ctr = ctr.with_exec(_constrained_install(f"-r {req.name}"))
    if compile_bytecode:
        ctr = ctr.with_(with_bytecode(VENV, f"{VENV}/bin/python"))
    return ctr.directory(VENV)


def service_dependencies(
    build: dagger.Container, tier: TierImage, service: Service, compile_bytecode: bool = True
) -> dagger.Directory | None:
    """Only what the service adds to its tier's venv: a layer of its own."""
    if service.requirements is None:
        return None
    venv = service_venv(build, tier, service, compile_bytecode)
    return tier.venv.diff(venv).with_timestamps(FIXED_MTIME)


def unit_tests(
    build: dagger.Container,
    tier: TierImage,
    service: Service,
    test_requirements: Sequence[Path],
    compile_bytecode: bool = True,
) -> dagger.Container | None:
    """The service's unit tests, run in the builder with its whole folder: nothing of this
    reaches the runtime image."""
    if not service.spec.tests:
        return None
    ctr = build.with_directory(VENV, service_venv(build, tier, service, compile_bytecode))
    for i, path in enumerate(test_requirements):
        mounted = f"/req/test/{i}-{path.name}"
        ctr = ctr.with_mounted_file(mounted, dag.host().file(str(path)))
        ctr = ctr.with_exec(_constrained_install(f"-r {mounted}"))
    folder = dag.host().directory(str(service.path), exclude=list(DEFAULT_EXCLUDES))
    return (
        ctr.with_directory("/src", folder)
        .with_workdir("/src")
        .with_env_variable("PYTHONPATH", "/src")
        .with_env_variable("PATH", f"{VENV}/bin:/opt/uv/bin:{SYSTEM_PATH}")
        .with_exec(list(service.spec.tests))
    )


def source(service: Service) -> dagger.Directory:
    """Only the service's own folder, narrowed by its include/exclude globs."""
    spec = service.spec
    return dag.host().directory(
        str(service.path), include=list(spec.include), exclude=[*DEFAULT_EXCLUDES, *spec.exclude]
    )


def _folder(service: Service, settings: BuildSettings) -> str:
    return service.path.relative_to(settings.root).as_posix()


def build_info(service: Service, settings: BuildSettings) -> str:
    prov = settings.provenance
    folder = _folder(service, settings)
    return json.dumps(
        {
            "service": service.name,
            "tier": service.tier,
            "commit": prov.revision,
            "branch": prov.branch,
            "dirty": prov.dirty(folder),
            "version": prov.version(folder),
            "created": prov.created,
            "source": prov.source_url,
        },
        indent=2,
        sort_keys=True,
    )


def labels(service: Service, settings: BuildSettings) -> dict[str, str]:
    prov = settings.provenance
    return {
        "org.opencontainers.image.title": service.name,
        "org.opencontainers.image.revision": prov.revision,
        "org.opencontainers.image.created": prov.created,
        "org.opencontainers.image.source": prov.source_url,
        "org.opencontainers.image.version": prov.version(_folder(service, settings)),
        "io.pipeline.tier": service.tier,
    }


def service_image(
    service: Service, tier: TierImage, settings: BuildSettings, build: dagger.Container
) -> dagger.Container:
    spec = service.spec
    ctr = tier.image.with_(with_apt(spec.apt, settings.cache_scope))
    deps = service_dependencies(build, tier, service, settings.compile_bytecode)
    if deps is not None:
        ctr = ctr.with_directory(VENV, deps)
    # Source and build-info share the last layer: an edit (or a new commit) changes only it.
    app = source(service)
    if settings.compile_bytecode:
        compiled = build.with_directory(APP, app).with_(with_bytecode(APP, "python3"))
        app = compiled.directory(APP)
    app = app.with_new_file("build-info.json", build_info(service, settings), permissions=0o644)
    ctr = ctr.with_directory(APP, app.with_timestamps(FIXED_MTIME))
    for key, value in {"PYTHONPATH": APP, **spec.env}.items():
        ctr = ctr.with_env_variable(key, value)
    for key, value in labels(service, settings).items():
        ctr = ctr.with_label(key, value)
    if spec.port is not None:
        ctr = ctr.with_exposed_port(spec.port)
    return ctr.with_workdir(APP).with_user(settings.user).with_default_args(list(spec.command))


@dataclass(frozen=True)
class ServiceBuild:
    image: dagger.Container  # the runtime image
    unit_tests: dagger.Container | None  # the unit-test run in the builder, if the service has one


def service_builds(
    project: Project,
    services: Sequence[Service],
    settings: BuildSettings,
    tiers: dict[str, TierImage] | None = None,
) -> dict[str, ServiceBuild]:
    tiers = tiers if tiers is not None else tier_images(project, settings)
    out = {}
    for svc in services:
        chain = project.chain(svc.tier)
        build = builder(settings, [p for t in chain for p in t.spec.build_apt])
        tier = tiers[svc.tier]
        out[svc.name] = ServiceBuild(
            service_image(svc, tier, settings, build),
            unit_tests(build, tier, svc, project.test_requirements, settings.compile_bytecode),
        )
    return out


def service_images(
    project: Project, services: Sequence[Service], settings: BuildSettings
) -> dict[str, dagger.Container]:
    return {name: b.image for name, b in service_builds(project, services, settings).items()}
