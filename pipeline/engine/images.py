"""Pure builders: data and Dagger objects in, lazy Containers and Directories out.

Layer plan of a service image, bottom to top:
  base image · runtime OS (non-root user) · per tier: its apt packages, its venv layer
  · the service's apt packages · the service's own dependencies (what it adds to its tier's
  venv) · the service's source with build-info.json (last, so an edit changes only that layer).
A tier whose install is planned lays its apt packages and venv layer right on its root tier's
layers, below those of the tiers between (``lowest``: ai-base is base-base, then ai's layer,
then backend's), so a change to a tier in between leaves the heavy layer below it as it was.
Every service of a tier starts from the same tier Container, so their tier layers are the
same layers, byte for byte.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import dagger
from dagger import dag

from pipeline.core import workspace
from pipeline.core.config import argv
from pipeline.core.inputs import (
    UV_VERSION,
    library_files,
    service_requirement_files,
    source_files,
    test_files,
)
from pipeline.engine import compat
from pipeline.engine.layers import (
    FIXED_MTIME,
    VENV,
    added,
    added_tree,
    at_root,
    by_content,
    one_step,
    program_text,
    venv_bytecode,
    with_bytecode,
    with_install,
    with_tracked,
    with_tree,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from pathlib import Path

    from pipeline.core.model import Project, Service, Tier
    from pipeline.core.settings import BuildSettings
    from pipeline.core.stamp import Stamp

APP = "/app"
# Where a builder step finds the CA bundle it is given (a proxy's CA): a folder mounted in
# every builder, made from the run's secret by one small exec (ca_files). Not a mounted secret
# file in every step: every exec whose rootfs comes from an exec with a mounted secret file
# makes the engine content-hash that whole rootfs again, which every step of a builder would
# pay. Not a file in a cache volume either: a shared cache mount came up empty for one exec of
# a run while the others found the file (BuildKit has an open report of cache mounts empty in
# parallel builds), and that install then failed on the proxy's certificate.
CA_DIR = "/run/pipeline-ca"
CA_BUNDLE = f"{CA_DIR}/ca.pem"
UV_CACHE = "/root/.cache/uv"
UV_HOME = "/opt/uv"  # uv's own venv in a builder
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Secrets:
    """Engine-side values the builders may need, never part of a layer. Neither value is in
    a cache key; the CA bundle's digest is, through its secret's name (ca_files)."""

    index_url: dagger.Secret | None = None  # a private package index, with its credentials
    ca_bundle: dagger.Secret | None = None  # extra CA certificates for fetching steps


def cache(scope: str, tool: str) -> dagger.CacheVolume:
    """A cache volume of one tool, named with the scope so scopes never mix (its ID fetched
    once, however many queries take it)."""
    return compat.shared(dag.cache_volume(f"pipeline-{scope}-{tool}"))


# How each tool's volume is mounted, wherever it is: since v0.21 a cache mount's sharing mode
# is part of the volume's identity (the same name mounted LOCKED and SHARED is two volumes), so
# a volume mounted with another mode elsewhere (a cache export or import) would be another,
# empty one. apt's are LOCKED (apt refuses to run beside another apt on them); the rest SHARED.
LOCKED_TOOLS = frozenset({"apt-cache", "apt-lists"})


# Names the scope of the volumes a container mounts, in its environment (with_cache).
SCOPE_ENV = "PIPELINE_SCOPE"


def with_cache(path: str, scope: str, tool: str) -> Callable[[dagger.Container], dagger.Container]:
    """A step mounting the scope's volume of ``tool`` at ``path``, in that tool's mode, with
    the scope named in the container's environment, so that every later step's cache key
    names it on every engine. v0.21 keys a step by the volumes it mounts, but v0.11 (BuildKit)
    leaves a cache mount's ID out of the key: there a step that read one branch's volume - a
    tier install from a uv cache that the branch's own tests could write - would be replayed
    in another branch's build, main's included."""
    sharing = (
        dagger.CacheSharingMode.LOCKED if tool in LOCKED_TOOLS else dagger.CacheSharingMode.SHARED
    )
    return lambda ctr: ctr.with_mounted_cache(
        path, cache(scope, tool), sharing=sharing
    ).with_env_variable(SCOPE_ENV, scope)


def _apt_install(packages: Sequence[str]) -> list[str]:
    script = (
        "apt-get update -qq && apt-get install -y -qq --no-install-recommends "
        f"{shlex.join(packages)} >/dev/null"
    )
    return ["sh", "-c", script]


def _with_apt_mounts(scope: str | None) -> Callable[[dagger.Container], dagger.Container]:
    """apt's caches in the scope's volumes (with no scope, in temporary mounts: the step's
    cache key then names no scope) and its logs in a temporary mount: none of them reaches a
    layer."""

    def caches(ctr: dagger.Container) -> dagger.Container:
        if scope is None:
            return ctr.with_mounted_temp("/var/cache/apt").with_mounted_temp("/var/lib/apt/lists")
        return ctr.with_(with_cache("/var/cache/apt", scope, "apt-cache")).with_(
            with_cache("/var/lib/apt/lists", scope, "apt-lists")
        )

    return lambda ctr: (
        ctr.with_(caches)
        .with_mounted_temp("/var/log")
        .with_env_variable("DEBIAN_FRONTEND", "noninteractive")
    )


def with_apt(
    packages: Sequence[str], scope: str | None
) -> Callable[[dagger.Container], dagger.Container]:
    """Install Debian packages in a builder (its exec's layer, never shipped) with apt's
    caches in the scope's volumes (None: in no volume): nothing of them reaches a layer."""

    def step(ctr: dagger.Container) -> dagger.Container:
        if not packages:
            return ctr
        return (
            ctr.with_(_with_apt_mounts(scope))
            .with_(compat.run(_apt_install(packages)))
            .without_env_variable("DEBIAN_FRONTEND")
            .without_mount("/var/cache/apt")
            .without_mount("/var/lib/apt/lists")
            .without_mount("/var/log")
        )

    return step


def _at_fixed_date(ctr: dagger.Container) -> dagger.Container:
    """A scratch container whose account tools date what they write at the fixed time: a
    user that useradd (or a package's adduser) adds gets its password's day of last change
    in /etc/shadow from SOURCE_DATE_EPOCH, else the day it ran, and two builds on two days
    would differ."""
    return ctr.with_env_variable("SOURCE_DATE_EPOCH", str(FIXED_MTIME))


def apt_install(packages: Sequence[str], scope: str, on: dagger.Container) -> dagger.Container:
    """The throwaway container, made from ``on``, that installed Debian packages and kept
    what the install added or changed under / (but the mounts, apt's caches and logs, and
    the files that hold only one run's bytes: layers.ROOT_EXCLUDES), every entry at the fixed
    time: ``apt_layer``. The install's own exec layer would carry the time it ran on every
    folder and file dpkg writes."""
    install = with_tracked([_apt_install(packages)])
    return on.with_(_with_apt_mounts(scope)).with_(_at_fixed_date).with_(install)


def apt_layer(packages: Sequence[str], scope: str, on: dagger.Container) -> dagger.Directory:
    """What installing Debian packages adds to ``on``, as a tree from / that is the same,
    byte for byte, on every engine and in every cache scope (``apt_install``)."""
    return added_tree(apt_install(packages, scope, on))


def builder(
    settings: BuildSettings, build_apt: Sequence[str] = (), secrets: Secrets | None = None
) -> dagger.Container:
    """The build stage: compilers and uv on the base image; never shipped. A CA bundle, when
    given, is found at CA_BUNDLE (see ca_files) with the tools' CA variables pointing at it.

    The compilers and uv come first and mount no volume of the scope: no project code runs in
    those steps and what they install does not depend on a cache, so every scope shares them
    (a branch's first build starts from them, as BuildKit reuses a stage whose cache mounts
    were pruned). Only the steps after them see the scope's volumes, which name it in their
    cache keys."""
    scope, secrets = settings.cache_scope, secrets or Secrets()
    ctr = (
        dag.container()
        .from_(settings.base_image)
        .with_(with_apt(["build-essential", *build_apt], None))
        .with_directory(UV_HOME, uv_tool(settings, secrets))
        .with_env_variable("PATH", f"{UV_HOME}/bin:{SYSTEM_PATH}")
    )
    ctr = (
        ctr.with_(with_ca(settings, secrets))
        .with_(with_cache(UV_CACHE, scope, "uv"))
        .with_env_variable("UV_CACHE_DIR", UV_CACHE)
        .with_env_variable("UV_LINK_MODE", "copy")
        .with_env_variable("UV_PYTHON_DOWNLOADS", "never")
        .with_env_variable("UV_SYSTEM_CERTS", "1")
        .with_env_variable("UV_NO_PROGRESS", "1")
    )
    if secrets.index_url is not None:
        ctr = ctr.with_secret_variable("UV_INDEX_URL", secrets.index_url)
    return ctr


def uv_tool(settings: BuildSettings, secrets: Secrets) -> dagger.Directory:
    """uv in a venv of its own (UV_HOME), installed by pip in a container of its own: no
    volume of a scope (the wheel is fetched whenever this step runs: when the base image, uv's
    version or the CA bundle changes), and the CA bundle, if any, as the builders find it
    (with_ca)."""
    script = (
        f"python3 -m venv {UV_HOME} && PIP_DISABLE_PIP_VERSION_CHECK=1 "
        f"{UV_HOME}/bin/pip install -q --no-cache-dir uv=={UV_VERSION}"
    )
    return (
        dag.container()
        .from_(settings.base_image)
        .with_(with_ca(settings, secrets, "PIP_CERT"))
        .with_(compat.run(["sh", "-c", script]))
        .directory(UV_HOME)
    )


def with_ca(
    settings: BuildSettings, secrets: Secrets, variable: str = "SSL_CERT_FILE"
) -> Callable[[dagger.Container], dagger.Container]:
    """A step giving the CA bundle, if any, to a container's fetching tools: the ``ca_files``
    folder mounted at CA_DIR and ``variable`` pointing at the bundle (SSL_CERT_FILE, which
    Python's ssl module reads, and uv with UV_SYSTEM_CERTS; PIP_CERT for pip)."""

    def step(ctr: dagger.Container) -> dagger.Container:
        if secrets.ca_bundle is None:
            return ctr
        folder = ca_files(settings, secrets.ca_bundle)
        return ctr.with_mounted_directory(CA_DIR, folder).with_env_variable(variable, CA_BUNDLE)

    return step


def ca_files(settings: BuildSettings, bundle: dagger.Secret) -> dagger.Directory:
    """A folder holding the CA bundle as ``ca.pem``, copied from the secret by an exec of its
    own; builders mount it at CA_DIR. The engine keys that exec by the secret's name, which
    carries a digest of the bundle (runner.secrets_from_env): another bundle makes another
    folder, the same one is made once and kept like any other step."""
    source = "/run/secrets/pipeline-ca.pem"
    out = "/tmp/pipeline-ca"  # noqa: S108 - a path inside the container
    return (
        dag.container()
        .from_(settings.base_image)
        .with_mounted_secret(source, bundle)
        .with_(compat.run(["sh", "-c", f"mkdir -p {out} && cp {source} {out}/ca.pem"]))
        .directory(out)
    )


def tier_builder(
    project: Project, tier: str, settings: BuildSettings, secrets: Secrets | None
) -> dagger.Container:
    """The builder with the build-only Debian packages of ``tier`` and the tiers below it."""
    build_apt = [p for t in project.chain(tier) for p in t.spec.build_apt]
    return builder(settings, build_apt, secrets)


ACCOUNT_FILES = ("passwd", "group", "shadow", "gshadow")


def runtime_os(settings: BuildSettings) -> dagger.Container:
    """The runtime stage's OS: the base image and a non-root user; no compiler, no uv.

    The user is added in a scratch container and only the four account files are taken, with
    fixed mtimes: the layer is the same on every machine (an exec layer would carry the exec's
    file times and useradd's log files)."""
    user, uid = settings.user, str(settings.uid)
    script = (
        f"groupadd --gid {uid} {user} && useradd --uid {uid} --gid {uid} "
        f"--no-create-home --home-dir {APP} --shell /usr/sbin/nologin {user}"
    )
    scratch = (
        dag.container()
        .from_(settings.base_image)
        .with_(_at_fixed_date)
        .with_(compat.run(["sh", "-c", script]))
    )
    accounts = dag.directory()
    for name in ACCOUNT_FILES:
        accounts = accounts.with_file(name, scratch.file(f"/etc/{name}"))
    return (
        dag.container()
        .from_(settings.base_image)
        .with_(with_tree(compat.shared(at_root("/etc", accounts))))
        .with_env_variable("PATH", f"{VENV}/bin:{SYSTEM_PATH}")
        .with_env_variable("VIRTUAL_ENV", VENV)
        .with_env_variable("PYTHONUNBUFFERED", "1")
        .with_env_variable("PYTHONDONTWRITEBYTECODE", "1")
    )


# A URL with a user or token in it (a requirements file's `--extra-index-url`). Newer engines
# trace every call with its arguments, so a file holding one is uploaded, never put in a query.
_CREDENTIALS = re.compile(r"://[^/\s@]+@")


def query_text(path: Path) -> str | None:
    """The file's text when it may travel inside a query: UTF-8, and no credentials in it."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None
    return None if _CREDENTIALS.search(text) else text


def _host_file(path: Path) -> dagger.File:
    """A small host file (requirements, a lock): its text in the query when ``query_text``
    allows, so no upload session runs for it; uploaded otherwise."""
    text = query_text(path)
    if text is None:
        return compat.shared(dag.host().file(str(path)))
    new = dag.directory().with_new_file(path.name, text, permissions=0o644)
    return compat.shared(new.file(path.name))


def _with_requirements(
    ctr: dagger.Container, group: str, paths: Sequence[Path]
) -> tuple[dagger.Container, list[str]]:
    """Host requirement files mounted under /req/<group>/<n>/ by their own names (uv reads a
    pyproject.toml only by that name), and where each is."""
    mounted = [f"/req/{group}/{i}/{path.name}" for i, path in enumerate(paths)]
    for target, path in zip(mounted, paths, strict=True):
        ctr = ctr.with_mounted_file(target, _host_file(path))
    return ctr, mounted


def _with_pins(ctr: dagger.Container, tier: Tier) -> tuple[dagger.Container, str]:
    """A tier's workspace-group pins mounted as a requirements file, and where it is."""
    text = workspace.requirements_text(tier.pins)
    name = f"group-{tier.spec.group}.txt"
    target = f"/req/{tier.name}/group/{name}"
    return ctr.with_mounted_file(
        target, dag.directory().with_new_file(name, text).file(name)
    ), target


@dataclass(frozen=True)
class Planning:
    """Where a plan on a tier's venv can run before the tier's install is done: ``on``, a
    builder whose venv holds what the tier's chain installed up to the last install that was
    not planned, and the pins of the planned installs laid above it since, bottom first
    (programs/plan.py ``--installed``). A child's plan then waits for its parent's plan, not
    for its install."""

    on: dagger.Container
    pins: tuple[dagger.File, ...] = ()


@dataclass(frozen=True)
class TierImage:
    tier: Tier
    # The builder with the tier's whole venv at VENV: the builds of the tier's children,
    # services and unit tests go on from here. The container of the tier's install (no copy
    # of the venv), with for a builder laid from layers (_builds_by_layers) the venv layers
    # of the tiers below laid over it.
    build: dagger.Container
    image: dagger.Container  # the runtime image every service of the tier starts from
    # ``image`` without any venv: the runtime OS and the Debian packages of the tier's chain,
    # where its children's and services' Debian packages are installed (apt_layer).
    os: dagger.Container
    # The exec that installed what the tier adds: ``build`` itself, or for a planned install
    # (planned_install) the container it ran in, apart from the parent's venv.
    install: dagger.Container
    planning: Planning  # the plans of the tier's children and tools run there
    # The venv layers ``image`` lays above its root tier's image, bottom first.
    above: tuple[dagger.Directory, ...] = ()
    # Execs that prove ``image`` holds the files its chain's installs made in turn (each
    # tier's layer laid below those of the tiers between it and the root: see lowest).
    proofs: tuple[dagger.Container, ...] = ()
    # The project's test requirements as a planned layer for ``build`` (tools_plannable),
    # compiled to bytecode: what the tier's services' unit tests run with, installed once
    # for the tier and kept while its plan is the same; and the exec that installed them.
    # None: each service installs them.
    test_tools: dagger.Directory | None = None
    tools_install: dagger.Container | None = None


def tier_venv(
    build: dagger.Container,
    tier: Tier,
    first: bool,
    compile_bytecode: bool = True,
    project: Project | None = None,
) -> tuple[dagger.Container, dagger.Directory]:
    """The builder with the tier's requirements installed on the venv (created when
    ``first``), then its workspace libraries, and what the install added: the tier's venv
    layer."""
    ctr, mounted = _with_requirements(build, tier.name, tier.requirements)
    if tier.pins:  # a workspace group's and the libraries' pins, as the lock pins them
        ctr, group = _with_pins(ctr, tier)
        mounted.append(group)
    python = f"{VENV}/bin/python"
    installs = [["uv", "pip", "install", "-q", "--python", python, "-r", req] for req in mounted]
    if tier.libraries and tier.lock is not None and project is not None:
        ctr, paths = _with_workspace(ctr, project, tier.lock.parent, tier.libraries)
        installs.append(_libraries_install(paths))
    if first:
        installs.insert(0, ["uv", "venv", "-q", "--python", "python3", VENV])
    ctr = ctr.with_(with_install(installs, compile_bytecode))
    return ctr, added(ctr)


# A plain requirement: a name, extras, versions and markers; no option, URL or path.
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[[^\]]*\])?\s*([<>=!~][^;@]*)?(;[^@]*)?")
_PLAN = "/tmp/pipeline-plan/add.txt"  # noqa: S108 - a path inside the container
PLAN_FILE = "/req/plan/add.txt"  # where a planned install reads its pins


def _plain(paths: Sequence[Path]) -> bool:
    """Whether every file is a .txt of plain requirements only: no option (an index, a hash
    after a pin), URL or path."""
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8") if path.suffix == ".txt" else None
        except (OSError, UnicodeDecodeError):
            return False
        lines = [raw.split("#", 1)[0].strip() for raw in (text or "-").splitlines()]
        if not all(_PLAIN.fullmatch(line) and "--" not in line for line in lines if line):
            return False
    return True


def _plain_chain(project: Project, tier: str) -> bool:
    """Whether every tier of the chain up to ``tier`` has plain requirement files only and no
    workspace pins or libraries: exact pins then stand for what the chain installed."""
    return all(
        not (below.pins or below.libraries or below.lock is not None) and _plain(below.requirements)
        for below in project.chain(tier)
    )


def plannable(project: Project, tier: str) -> bool:
    """Whether the tier's install can be planned (programs/plan.py): every tier of its chain
    has requirement files of plain requirements only and no workspace pins or libraries, so
    that exact pins stand for what the install adds, and the parent's installed set is pins
    too. Anything else (an index or hashes in a file, a URL, a path, a pyproject.toml)
    installs on top of the parent's venv, and so does a tier with no requirement files (it
    adds no package: nothing to plan)."""
    return bool(project.tiers[tier].requirements) and _plain_chain(project, tier)


def tools_plannable(project: Project, tier: str) -> bool:
    """Whether the project's test requirements can be installed for ``tier``'s services as a
    planned layer (``TierImage.test_tools``), as a child tier of it would be."""
    tests = project.test_requirements
    return bool(tests) and _plain(tests) and _plain_chain(project, tier)


def planned_install(
    project: Project,
    tier: Tier,
    planning: Planning,
    settings: BuildSettings,
    secrets: Secrets | None,
) -> tuple[dagger.Container, dagger.File]:
    """A child tier's install apart from its parent's venv, and its pins: the pins of what it
    adds are planned on the parent's venv (``planning``), then installed without dependencies
    into an empty venv at the same path in a builder of the tier's chain, and what that added
    kept as the layer (``added_tree``). The install's cache key is the pins' content (copied into
    a directory of their own, which every engine keys by content), so a change below that
    leaves them equal reuses the install and the layer, on v0.11 without compressing it
    again; the parent's change still makes a new plan."""
    group = (tier.name, tier.requirements)
    return _planned(project, tier.name, group, planning, settings, secrets)


def _planned(
    project: Project,
    chain: str,
    requirements: tuple[str, Sequence[Path]],
    planning: Planning,
    settings: BuildSettings,
    secrets: Secrets | None,
    *,
    compiled: bool | None = None,
) -> tuple[dagger.Container, dagger.File]:
    """``planned_install`` of ``requirements`` (a group name for their mounts, the files) on
    the venv ``planning`` stands for, installed in a builder of the tier ``chain``'s chain;
    and the pins it installed."""
    python = f"{VENV}/bin/python"
    group, paths = requirements
    ctr, mounted = _with_requirements(planning.on, group, paths)
    installed: list[str] = []
    for i, laid in enumerate(planning.pins):
        path = f"/req/installed/{i}/add.txt"
        ctr = ctr.with_mounted_file(path, laid)
        installed += ["--installed", path]
    program = ["python3", "-c", program_text("plan.py"), python, _PLAN, *installed, *mounted]
    plan = ctr.with_(compat.run(program))
    pins = dag.directory().with_file("add.txt", plan.file(_PLAN)).file("add.txt")
    install = (
        f"test ! -s {PLAN_FILE} || uv pip install -q --no-deps --python {python} -r {PLAN_FILE}"
    )
    compiled = settings.compile_bytecode if compiled is None else compiled
    # the empty venv as the parent's root tier left it: uv's lock file and the venv's own
    # bytecode in place, so that the layer holds only what the packages add
    empty = [
        ["uv", "venv", "-q", "--python", "python3", VENV],
        ["uv", "pip", "install", "-q", "--python", python, "-r", "/dev/null"],
    ]
    if compiled:
        empty.append(venv_bytecode())
    installer = (
        tier_builder(project, chain, settings, secrets)
        .with_(compat.run(one_step(*empty)))
        .with_mounted_file(PLAN_FILE, pins)
        .with_(with_install([["sh", "-c", install]], compiled))
    )
    return installer, pins


def lowest(project: Project, tier: str) -> bool:
    """Whether the tier's venv layer is laid right on its root tier's image, below the layers
    of the tiers between them: its install is planned (so neither its layer nor its place
    depends on those tiers' layers) and none of those tiers has Debian packages of its own.
    A change to a tier in between then leaves the heavy layers of the tiers that extend it
    as they were (an ML tier's: hundreds of MB the engine would otherwise compress again),
    with only the changed tier's layer laid anew above them. The files are those of the
    layers laid in turn: what a planned install adds are packages the tiers below it do not
    have, and an exec proves it by their files (programs/disjoint.py)."""
    chain = project.chain(tier)
    if len(chain) < len(["root", "between", "tier"]) or not plannable(project, tier):
        return False
    return not any(between.spec.apt for between in chain[1:-1])


def _laid(ctr: dagger.Container, trees: Iterable[dagger.Directory]) -> dagger.Container:
    """``ctr`` with each tree laid over its root in turn."""
    for tree in trees:
        ctr = ctr.with_(with_tree(tree))
    return ctr


def _builds_by_layers(project: Project, tier: str) -> bool:
    """Whether the builder of a ``lowest`` tier can be laid from layers: the container its
    planned install ran in (its root tier's builder, an empty venv and the tier's packages,
    which are where the install put them: no copy), then the root tier's venv layer and
    those of the tiers between. Every tier above the root then adds to the builder its
    planned layer and nothing else (no Debian build packages), so that gives the venv the
    image has: the empty venv is the root's own, which its layer lays again, and the tier's
    files meet the others only in equal folders (the same proof as the image's). Only the
    small layers below the tier's are copied, never its own (an ML tier's: hundreds of MB),
    and a change below it leaves its install as it was."""
    return all(plannable(project, t.name) and not t.spec.build_apt for t in project.chain(tier)[1:])


def _disjoint(build: dagger.Container, layer: dagger.Directory, tier: str) -> dagger.Container:
    """The exec proving ``layer`` meets what ``build`` holds only in equal folders."""
    tree = "/tmp/pipeline-tree"  # noqa: S108 - a path inside the container
    check = ["python3", "-B", "-c", program_text("disjoint.py"), tree, tier]
    return build.with_mounted_directory(tree, layer).with_(compat.run(check))


def tier_images(
    project: Project, settings: BuildSettings, secrets: Secrets | None = None
) -> dict[str, TierImage]:
    """Every tier's runtime image, parents first; each child holds its parent's files and
    its own. A child's install is planned (``planned_install``) when it can be, else it runs
    in its parent's builder. A child's layer sits on its parent's image, or for a ``lowest``
    tier on its root tier's image, under the layers of the tiers between."""
    out: dict[str, TierImage] = {}
    venv_layers: dict[str, dagger.Directory] = {}  # each tier's, as laid on the images
    for name, tier in project.tiers.items():
        parent = out[tier.spec.extends] if tier.spec.extends else None
        planning = None  # where the tier's plan runs, when it has one
        if parent is None:
            build = tier_builder(project, name, settings, secrets)
        else:
            below = {p for t in project.chain(parent.tier.name) for p in t.spec.build_apt}
            extra = [p for p in tier.spec.build_apt if p not in below]
            build = parent.build.with_(with_apt(extra, settings.cache_scope))
            # a plan needs the chain's build packages (a source package's metadata may)
            planning = Planning(build) if extra else parent.planning
        under_build = build
        # A layer cannot delete, which is why children install on top of their parent's pins
        # instead of replacing them.
        if planning is not None and plannable(project, name):  # a child tier's
            install, pins = planned_install(project, tier, planning, settings, secrets)
            layer = by_content(added_tree(install), settings.base_image)
            build = build.with_(with_tree(layer))
            planning = replace(planning, pins=(*planning.pins, pins))
        else:
            build, _ = tier_venv(build, tier, parent is None, settings.compile_bytecode, project)
            install, layer = build, by_content(added_tree(build), settings.base_image)
            planning = Planning(build)
        venv_layers[name] = layer
        system = parent.os if parent else runtime_os(settings)
        # what the layer is laid on, the layers laid there (bottom first), and those of them
        # above the root tier's image
        proofs: tuple[dagger.Container, ...] = parent.proofs if parent else ()
        laid: tuple[dagger.Directory, ...]
        above: tuple[dagger.Directory, ...]
        if parent is None:
            under, laid, above = system, (layer,), ()
        elif lowest(project, name):
            root = out[project.chain(name)[0].name]
            under, laid = root.image, (layer, *parent.above)
            above = laid
            proofs = (*proofs, _disjoint(under_build, layer, name))
            if _builds_by_layers(project, name):  # the root's venv and the tiers between
                venvs = (venv_layers[root.tier.name], *parent.above)
                build = _laid(install.without_mount(PLAN_FILE), venvs)
        else:
            under, laid, above = parent.image, (layer,), (*parent.above, layer)
        if tier.spec.apt:  # one tree (its ID fetched once), laid on both
            debs = apt_layer(tier.spec.apt, settings.cache_scope, system)
            system, under = system.with_(with_tree(debs)), under.with_(with_tree(debs))
        image = _laid(under, laid)
        tools = tools_install = None
        if tools_plannable(project, name):
            test = ("test", project.test_requirements)
            tools_install, _ = _planned(
                project, name, test, planning, settings, secrets, compiled=True
            )
            tools = added_tree(tools_install)
        out[name] = TierImage(
            tier, build, image, system, install, planning, above, proofs, tools, tools_install
        )
    return out


def prefetch(
    project: Project, used: Iterable[str], settings: BuildSettings, secrets: Secrets | None
) -> list[dagger.Container]:
    """Downloads ahead of the tier installs: for each chain of tiers below the ``used`` tiers
    (only the longest, and only those of two tiers or more), one exec in the root's builder
    that installs the whole chain's requirements into a throwaway folder of uv's cache, so
    the wheels a child tier needs are fetched while its parents install instead of after.

    Best effort and invisible: the exec always succeeds, prints nothing, and leaves only uv's
    own cache entries behind; a tier's install that needs a wheel being fetched waits for it
    (uv locks its cache entries) and then copies it. A failed download is the tier install's
    to report."""
    chains = {name: project.chain(name) for name in set(used)}
    below = {tier.name for chain in chains.values() for tier in chain[:-1]}  # covered by another
    out = []
    for name, chain in sorted(chains.items()):
        if len(chain) == 1 or name in below:  # a root tier alone waits for nothing
            continue
        paths = [path for tier in chain for path in tier.requirements]
        ctr, mounted = _with_requirements(
            tier_builder(project, chain[0].name, settings, secrets), "prefetch", paths
        )
        for tier in chain:
            if tier.pins:
                ctr, group = _with_pins(ctr, tier)
                mounted.append(group)
        reqs = " ".join(f"-r {shlex.quote(req)}" for req in mounted)
        script = (
            f"d=$(mktemp -d {UV_CACHE}/.pipeline-prefetch.XXXXXX) || exit 0; "
            f'UV_LINK_MODE=hardlink uv pip install -q --python python3 --target "$d" {reqs} '
            '>/dev/null 2>&1; rm -rf "$d"; exit 0'
        )
        out.append(ctr.with_(compat.run(["sh", "-c", script])))
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


def _service_installs(service: Service) -> list[list[str]]:
    """Commands installing the service's own dependencies (mounted at /svc) into the venv,
    under the tier's pins."""
    req = service.requirements
    if req is None:
        return []
    used = service.workspace
    if used is not None:
        # the lock's pins for this service, then its workspace libraries built as packages
        # (non-editable, their dependencies being among the pins)
        steps = [_constrained_install(f"-r /svc/{PINS}")] if used.pins else []
        if used.libraries:
            paths = [_in_workspace(used.root, lib) for lib in used.libraries]
            steps.append(_libraries_install(paths))
        return steps
    if req.name == "pyproject.toml":
        # With a lock file the locked versions are installed; without, the declared ranges.
        script = (
            "mkdir -p /tmp/svc && if [ -f /svc/uv.lock ]; then cd /svc && uv export -q --frozen "
            "--no-hashes --no-emit-project --no-dev -o /tmp/svc/requirements.txt; "
            "else cp /svc/pyproject.toml /tmp/svc/pyproject.toml; fi"
        )
        return [["sh", "-c", script], _constrained_install("-r $(ls /tmp/svc/*)")]
    return [_constrained_install(f"-r /svc/{req.name}")]


PINS = "pins.txt"  # a workspace member's pins, read out of the workspace's lock
WORKSPACE = "/ws"  # where a workspace member's libraries are mounted, one folder each


def _with_service_files(
    ctr: dagger.Container, service: Service, project: Project
) -> dagger.Container:
    files = dag.directory()
    for path in service_requirement_files(service):
        files = files.with_file(path.name, _host_file(path))
    used = service.workspace
    if used is not None:
        files = files.with_new_file(PINS, used.pins_text(), permissions=0o644)
        ctr, _ = _with_workspace(ctr, project, used.root, used.libraries)
    return ctr.with_mounted_directory("/svc", files)


def _with_workspace(
    ctr: dagger.Container,
    project: Project,
    root: Path,
    libraries: Sequence[workspace.Library],
) -> tuple[dagger.Container, list[str]]:
    """The workspace as uv finds it (its root's pyproject, each library where it is, under
    WORKSPACE), so a library whose sources name another member (`{ workspace = true }`)
    builds; and where each library is."""
    ctr = ctr.with_mounted_file(
        f"{WORKSPACE}/{workspace.PYPROJECT}", _host_file(root / workspace.PYPROJECT)
    )
    paths = []
    for lib in libraries:
        path = _in_workspace(root, lib)
        ctr = ctr.with_mounted_directory(path, _files(lib.path, library_files(project, lib)))
        paths.append(path)
    return ctr, paths


def _in_workspace(root: Path, library: workspace.Library) -> str:
    """Where ``_with_workspace`` mounts a library: as it lies in the workspace at ``root``."""
    return f"{WORKSPACE}/{library.path.relative_to(root).as_posix()}"


def _libraries_install(paths: Sequence[str]) -> list[str]:
    """Build the workspace libraries mounted at ``paths`` and install them into the venv,
    non-editable; their dependencies are installed before, as the lock pins them."""
    return ["uv", "pip", "install", "-q", "--python", f"{VENV}/bin/python", "--no-deps", *paths]


def service_layer(
    tier: TierImage, service: Service, project: Project, compile_bytecode: bool = True
) -> dagger.Directory | None:
    """What the service's own dependencies add to its tier's venv (None without any), as a
    tree from / for ``with_tree``, installed under the tier's pins so a service never silently
    replaces a tier package."""
    if service.requirements is None:
        return None
    installs = _service_installs(service)
    if not installs:  # a workspace member that needs nothing beyond its tier
        return None
    ctr = _with_service_files(tier.build, service, project)
    return added_tree(ctr.with_(with_install(installs, compile_bytecode)))


def _files(folder: Path, names: Sequence[str]) -> dagger.Directory:
    """Exactly these files of a host folder (the inputs model's list), nothing else."""
    if not names:
        return dag.directory()
    escaped = [re.sub(r"([*?\[\]\\])", r"\\\1", n) for n in names]
    return compat.shared(dag.host().directory(str(folder), include=escaped))


# Before the smoke command: the program of the image's command must be there (a missing one
# would otherwise fail only when started, with no output). $1 is the program.
_ON_PATH = (
    'command -v "$1" >/dev/null 2>&1 || { echo "the command\'s program $1 is not on PATH '
    '($PATH) in the image; fix: install the package that provides it, or correct command" '
    '>&2; exit 127; }; shift; exec "$@"'
)
_EXECUTABLE = (
    'test -x "$1" || { echo "the command\'s program $1 is not an executable file in the '
    'image; fix: correct command" >&2; exit 127; }; shift; exec "$@"'
)


def smoke_argv(service: Service) -> list[str]:
    """The smoke check as it runs in the image: the command's program is found, then the
    smoke command runs."""
    spec = service.spec
    program = argv(spec.command)[0]
    check = _EXECUTABLE if "/" in program else _ON_PATH
    return ["sh", "-c", check, "smoke", program, *(spec.smoke or [])]


def unit_tests(tier: TierImage, service: Service, project: Project) -> dagger.Container | None:
    """The service's unit tests, run in the tier's builder with its folder (less what
    ``exclude`` keeps out) mounted. First the service's test environment: the project's test
    requirements over the tier's venv (under its pins), then the service's own dependencies
    (under both), and what they added compiled to bytecode. Then the tests, in an exec of
    their own on it. Nothing of this reaches the runtime image, and it needs nothing of the
    image's build, so the two run side by side.

    The test requirements are the tier's planned layer (``TierImage.test_tools``) when they
    can be planned: installed once for all of the tier's services, and kept across a change
    of the tier that leaves their plan the same, so a service without dependencies of its own
    runs its tests with no install at all. Otherwise each service installs them in the step
    that installs its dependencies.

    The environment is kept apart from the tests because an edit of the service's code
    leaves it as it was: the engine replays it, and the tests start with pytest and the
    service's dependencies already compiled. Compiling them again in every run of the tests
    (a throwaway exec writes no bytecode that lasts) cost a one-line edit 1.1-1.2 s of its
    2 s of tests on v0.21.8. A service's own dependencies are its own step, not a chain of
    steps shared by a tier's services: the engine content-hashes the whole rootfs an exec
    starts from whenever that rootfs is new, which such a chain would pay again after any
    tier change."""
    if not service.spec.tests:
        return None
    steps: list[list[str]] = []
    if tier.test_tools is not None:
        ctr = tier.build.with_(with_tree(tier.test_tools))
    else:
        ctr, mounted = _with_requirements(tier.build, "test", project.test_requirements)
        steps += [_constrained_install(f"-r {req}") for req in mounted]
    if service.requirements is not None:
        ctr = _with_service_files(ctr, service, project)
        steps += _service_installs(service)
    if steps:
        ctr = ctr.with_(compat.run(one_step(*steps, venv_bytecode())))
    folder = _files(service.path, test_files(service, project.root))
    # Mounted, not copied: a file written into the builder's rootfs would make a new rootfs.
    return (
        ctr.with_mounted_directory("/src", folder)
        .with_workdir("/src")
        .with_env_variable("PYTHONPATH", "/src")
        .with_env_variable("PATH", f"{VENV}/bin:{UV_HOME}/bin:{SYSTEM_PATH}")
        .with_(compat.run(list(service.spec.tests)))
    )


def service_image(
    service: Service,
    tier: TierImage,
    layer: dagger.Directory | None,
    settings: BuildSettings,
    stamp: Stamp,
) -> tuple[dagger.Container, int]:
    """The service's runtime image, and how many layers it lays on its tier image (one per
    step of ``steps``; the report tells the tier's layers from the service's by it)."""
    spec = service.spec
    steps: list[Callable[[dagger.Container], dagger.Container]] = []
    if spec.apt:
        # installed on the tier's system without its venv (apt and dpkg never read /opt/venv)
        steps.append(with_tree(apt_layer(spec.apt, settings.cache_scope, tier.os)))
    if layer is not None:
        steps.append(with_tree(layer))
    # Source and build-info share the last layer: an edit (or a new commit) changes only it.
    app = _files(service.path, source_files(service, settings.root))
    if settings.compile_bytecode:
        # compiled by the base image's interpreter (the runtime's): no tier change reruns it
        compiled = dag.container().from_(settings.base_image).with_directory(APP, app)
        app = compiled.with_(with_bytecode(APP, "python3")).directory(APP)
    app = app.with_new_file("build-info.json", stamp.build_info(), permissions=0o644)
    steps.append(with_tree(at_root(APP, app)))
    ctr = tier.image
    for step in steps:
        ctr = ctr.with_(step)
    for key, value in {"PYTHONPATH": APP, **spec.env}.items():
        ctr = ctr.with_env_variable(key, value)
    for key, value in stamp.labels().items():
        ctr = ctr.with_label(key, value)
    if spec.port is not None:
        ctr = ctr.with_exposed_port(spec.port)
    image = (
        ctr.with_workdir(spec.workdir)
        .with_user(settings.user)
        .with_default_args(argv(spec.command))
    )
    return image, len(steps)


@dataclass(frozen=True)
class ServiceBuild:
    image: dagger.Container  # the runtime image
    own_layers: int  # how many of the image's layers are the service's, above its tier's
    unit_tests: dagger.Container | None  # the unit-test run in the builder, if the service has one


def service_build(
    project: Project,
    service: Service,
    settings: BuildSettings,
    tiers: dict[str, TierImage],
    stamp: Stamp,
) -> ServiceBuild:
    tier = tiers[service.tier]
    layer = service_layer(tier, service, project, settings.compile_bytecode)
    image, own = service_image(service, tier, layer, settings, stamp)
    return ServiceBuild(image, own, unit_tests(tier, service, project))
