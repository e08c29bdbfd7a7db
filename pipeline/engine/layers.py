"""Venv layers decided in the builder: precompiled bytecode, and what an install added to a
venv, by content. Steps only (Container -> Container); no I/O.
"""

from __future__ import annotations

import shlex
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from dagger import dag

from pipeline.engine import compat, programs

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import dagger

VENV = "/opt/venv"
# Files copied out of a builder carry build-time mtimes; one fixed time (1980-01-01, the zip
# epoch) makes venv, apt, account and source layers byte-identical for the same inputs on any
# machine. An exec's own layer is not: the files and folders an install writes (dpkg's
# database, the package's folders) carry the time it ran, which is why an apt install reaches
# a runtime image as a tree (with_tracked) and never as its exec's layer.
FIXED_MTIME = 315532800


@cache
def program_text(name: str) -> str:
    """The text of a program of engine/programs (``compile.py``...), run as ``python -c TEXT``:
    nothing is mounted or written into the container for it."""
    return resources.files(programs).joinpath(name).read_text(encoding="utf-8")


# The folders of packages' own test suites, left uncompiled in a venv.
PACKAGE_TESTS = ("tests", "test")


def _compile(folder: str, python: str, skip: Sequence[str] = ()) -> list[str]:
    # a fixed hash seed: the pycs' bytes are the same on every run (see programs/compile.py)
    return ["env", "PYTHONHASHSEED=0", python, "-c", program_text("compile.py"), folder, *skip]


def venv_bytecode() -> list[str]:
    """The command that precompiles what the venv at VENV has no bytecode for yet (its
    packages' own test suites left out)."""
    return _compile(VENV, f"{VENV}/bin/python", PACKAGE_TESTS)


def with_bytecode(folder: str, python: str) -> Callable[[dagger.Container], dagger.Container]:
    """Precompile ``folder`` so containers start without compiling imports."""
    return compat.run(_compile(folder, python))


# What a layer adds is decided in the builder by one exec, by content (programs/snapshot.py
# before the installs, programs/layer.py after them): the engine's Directory.diff compares two
# snapshots' metadata and, depending on its cache history, may keep files the lower layer
# already has. The layer's files are hard links to the venv's, every entry at the fixed time;
# it is kept as a tree from / (its files under TOP/opt/venv), so that the folders above the
# venv carry the fixed time too (see at_root).


# Paths inside the builder container, never on the host.
_SNAPSHOT_FILE = "/tmp/pipeline-snapshot.json"  # noqa: S108
_LAYER_DIR = "/tmp/pipeline-layer"  # noqa: S108


def in_turn(*commands: Sequence[str]) -> str:
    """Several commands as one shell line, each run only if the one before succeeded."""
    return " && ".join(shlex.join(c) for c in commands)


def one_step(*commands: Sequence[str]) -> list[str]:
    """Several commands as one exec: one step of the engine's, where splitting them would
    buy no cache hit (they always change together)."""
    return ["sh", "-c", in_turn(*commands)]


def with_install(
    installs: Sequence[Sequence[str]], compile_bytecode: bool
) -> Callable[[dagger.Container], dagger.Container]:
    """Run ``installs`` on the venv, then precompile it and keep what they added in a folder
    of its own (``added``) - all in one exec."""
    commands = [list(c) for c in installs]
    if compile_bytecode:
        commands.append(venv_bytecode())
    snapshot = ["python3", "-c", program_text("snapshot.py"), VENV, _SNAPSHOT_FILE]
    layer = program_text("layer.py")
    keep = ["python3", "-c", layer, VENV, _SNAPSHOT_FILE, _LAYER_DIR, str(FIXED_MTIME)]
    commands = [snapshot, *commands, keep]
    return compat.run(one_step(*commands))


# What a tracked exec over / never keeps: the engine's mounts and per-exec files (v0.11 mounts
# /.dagger_meta_mount, where the exec's own stdout and stderr are being written), apt's caches
# and logs (volumes and a temporary mount, never a layer's), and files that only hold one
# run's bytes: ldconfig's aux-cache (its libraries' inodes and change times) and the backups
# dpkg and debconf make of their state before a run.
ROOT_EXCLUDES = (
    "/.dagger*",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/tmp",  # noqa: S108 - a path inside the container, left out
    "/var/tmp",  # noqa: S108 - a path inside the container, left out
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/var/log",
    "/var/cache/apt",
    "/var/lib/apt/lists",
    "/var/cache/ldconfig/aux-cache",
    "/var/lib/dpkg/*-old",
    "/var/cache/debconf/*-old",
)


def with_tracked(
    commands: Sequence[Sequence[str]], excludes: Sequence[str] = ROOT_EXCLUDES
) -> Callable[[dagger.Container], dagger.Container]:
    """Run ``commands`` (as the container's user, root for a system install) and keep what
    they added or changed anywhere under /, but ``excludes``, as a tree from / with every
    entry at the fixed time (``added_tree``) - all in one exec. A tree cannot remove a file:
    an entry the commands removed fails the exec, naming it.

    The programs run with -B: a pyc the interpreter wrote for them would be a change."""
    snapshot = ["python3", "-B", "-c", program_text("snapshot.py"), "/", _SNAPSHOT_FILE]
    layer = program_text("layer.py")
    keep = ["python3", "-B", "-c", layer, "/", _SNAPSHOT_FILE, _LAYER_DIR, str(FIXED_MTIME)]
    keep.append("--no-removals")
    return compat.run(one_step([*snapshot, *excludes], *commands, [*keep, *excludes]))


def added(ctr: dagger.Container) -> dagger.Directory:
    """What ``with_install`` kept: the files it added to the venv, with fixed mtimes."""
    return compat.shared(ctr.directory(_LAYER_DIR + VENV))


def added_tree(ctr: dagger.Container) -> dagger.Directory:
    """What ``with_install`` (or ``with_tracked``) kept, as a tree from / (its files under
    opt/venv), every folder at the fixed time: the layer ``with_tree`` lays."""
    return compat.shared(ctr.directory(_LAYER_DIR))


# Paths inside the containers that pack and unpack a tree (by_content), never on the host.
_TREE_IN = "/tmp/pipeline-tree-in"  # noqa: S108
_PACKED_DIR = "/tmp/pipeline-packed"  # noqa: S108
_PACKED_NAME = "tree.tar"
_PACKED = f"{_PACKED_DIR}/{_PACKED_NAME}"
_TREE_OUT = "/tmp/pipeline-tree-out"  # noqa: S108


def by_content(tree: dagger.Directory, python_image: str) -> dagger.Directory:
    """``tree`` as one the engine knows by its bytes, not by the steps that made it (v0.21:
    programs/tartree.py packs it into a file, which a folder's file is known by, and unpacks
    that file, entry for entry): a tier's venv layer that a new cache scope installs again,
    equal to the last, then is the same layer, laid and compressed once. Two execs in
    ``python_image`` (an image with Python, whichever scope). v0.11 keys a copied folder
    by its content already: ``tree`` as it is."""
    if compat.legacy():
        return tree
    program = program_text("tartree.py")
    packed = (
        dag.container()
        .from_(python_image)
        .with_mounted_directory(_TREE_IN, tree)
        .with_(compat.run(["python3", "-B", "-c", program, "pack", _TREE_IN, _PACKED]))
    )
    archive = packed.directory(_PACKED_DIR).file(_PACKED_NAME)
    unpacked = (
        dag.container()
        .from_(python_image)
        .with_mounted_file(_PACKED, archive)
        .with_(compat.run(["python3", "-B", "-c", program, "unpack", _PACKED, _TREE_OUT]))
    )
    return compat.shared(unpacked.directory(_TREE_OUT))


def with_tree(tree: dagger.Directory) -> Callable[[dagger.Container], dagger.Container]:
    """A step laying ``tree`` (a directory holding paths from /) over the root: its folders'
    times, those of the existing parents included, are the tree's. Copying a directory to a
    path gives the folders it creates there, and on v0.21 the destination folder itself, the
    time of the copy: /opt and /opt/venv would differ on every clean engine."""
    return lambda ctr: ctr.with_directory("/", tree)


def at_root(path: str, directory: dagger.Directory) -> dagger.Directory:
    """``directory`` at ``path`` in a tree for ``with_tree``, every entry (``path``'s folders
    included) at the fixed time. It copies ``directory``: for small ones (accounts, sources);
    a venv's layer is made as a tree in its builder instead (added_tree)."""
    return dag.directory().with_directory(path.strip("/"), directory).with_timestamps(FIXED_MTIME)
