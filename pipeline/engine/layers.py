"""Venv layers decided in the builder: precompiled bytecode, and what an install added to a
venv, by content. Steps only (Container -> Container); no I/O.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from dagger import dag

from pipeline.engine import compat

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import dagger

VENV = "/opt/venv"
# Files copied out of a builder carry build-time mtimes; one fixed time (1980-01-01, the zip
# epoch) makes venv, account and source layers byte-identical for the same inputs on any
# machine. Layers of apt installs are not: dpkg stamps its database with the time.
FIXED_MTIME = 315532800


# Compiles every .py under a folder that has no .pyc yet, as unchecked-hash pycs: valid
# whatever the files' mtimes (which are normalised), never rewritten for files a lower layer
# already compiled (so a layer holds only new ones), and deterministic with a fixed hash seed.
# Folders named in the further arguments are skipped: in a venv, the test suites packages
# ship (numpy/_core/tests, sklearn/*/tests: a third of the ai tier's modules), which a service
# never imports.
_COMPILE = """
import importlib.util, os, pathlib, py_compile, sys
from concurrent.futures import ProcessPoolExecutor
mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
root, skip = pathlib.Path(sys.argv[1]), set(sys.argv[2:])
def one(src):
    pyc = importlib.util.cache_from_source(src)
    py_compile.compile(src, cfile=pyc, dfile=src, quiet=2, invalidation_mode=mode)
todo = [str(p) for p in sorted(root.rglob("*.py"))
        if not skip.intersection(p.relative_to(root).parts[:-1])
        and not os.path.exists(importlib.util.cache_from_source(str(p)))]
with ProcessPoolExecutor() as pool:  # every core: a tier like scipy's holds thousands of files
    list(pool.map(one, todo, chunksize=32))
"""
# The folders of packages' own test suites, left uncompiled in a venv.
PACKAGE_TESTS = ("tests", "test")


def _compile(folder: str, python: str, skip: Sequence[str] = ()) -> list[str]:
    return ["env", "PYTHONHASHSEED=0", python, "-c", _COMPILE, folder, *skip]


def with_bytecode(folder: str, python: str) -> Callable[[dagger.Container], dagger.Container]:
    """Precompile ``folder`` so containers start without compiling imports."""
    return compat.run(_compile(folder, python))


# What a layer adds, decided in the builder by one exec: every file, link or folder of the
# venv that is new or changed since the snapshot taken at the start of the same exec (the
# engine's Directory.diff compares two snapshots' metadata and, depending on its cache
# history, may keep files the lower layer already has). Within one exec a file nobody wrote
# keeps its inode, size and time; a small file rewritten with the same bytes (uv's .lock) is
# told apart by content. The layer's files are hard links to the venv's (no copy), and every
# entry gets the fixed time there, so no copy is made for timestamps either. The layer is kept
# as a tree from / (its files under TOP/opt/venv), so that the folders above the venv carry the
# fixed time too (see at_root).
_SNAPSHOT = """
import hashlib, json, os, sys
root, out, small = sys.argv[1], {}, 1 << 16
for base, dirs, files in os.walk(root):
    for name in dirs + files:
        path = os.path.join(base, name)
        st = os.lstat(path)
        if os.path.islink(path):
            out[path] = ["link", os.readlink(path)]
        elif os.path.isdir(path):  # a folder is new or not: entries come and go in it
            out[path] = ["dir", st.st_mode]
        else:
            with open(path, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest() if st.st_size < small else ""
            out[path] = [st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, digest]
json.dump(out, open(sys.argv[2], "w"))
"""
_LAYER = """
import hashlib, json, os, shutil, sys
root, before, top, when = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
layer = top + root
old = json.load(open(before))

def unchanged(path, st):
    was = old.get(path)
    if os.path.islink(path):
        return was == ["link", os.readlink(path)]
    if os.path.isdir(path):
        return was == ["dir", st.st_mode]
    if not was or was[0] == "link" or was[0] == "dir" or was[:2] != [st.st_mode, st.st_size]:
        return False
    if was[2:4] == [st.st_mtime_ns, st.st_ino]:
        return True
    if not was[4]:
        return False
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest() == was[4]

shutil.rmtree(top, ignore_errors=True)
os.makedirs(layer)
for base, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(dirs + files):
        path = os.path.join(base, name)
        st = os.lstat(path)
        if unchanged(path, st):
            continue
        target = os.path.join(layer, os.path.relpath(path, root))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(path):
            os.symlink(os.readlink(path), target)
        elif os.path.isdir(path):
            os.makedirs(target, exist_ok=True)
            shutil.copystat(path, target)
        else:
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
for base, dirs, files in os.walk(top, topdown=False):
    for name in files + dirs:
        os.utime(os.path.join(base, name), (when, when), follow_symlinks=False)
os.utime(top, (when, when))
"""


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
    python = f"{VENV}/bin/python"
    commands = [list(c) for c in installs]
    if compile_bytecode:
        commands.append(_compile(VENV, python, PACKAGE_TESTS))
    snapshot = ["python3", "-c", _SNAPSHOT, VENV, _SNAPSHOT_FILE]
    keep = ["python3", "-c", _LAYER, VENV, _SNAPSHOT_FILE, _LAYER_DIR, str(FIXED_MTIME)]
    commands = [snapshot, *commands, keep]
    return compat.run(one_step(*commands))


def added(ctr: dagger.Container) -> dagger.Directory:
    """What ``with_install`` kept: the files it added to the venv, with fixed mtimes."""
    return compat.shared(ctr.directory(_LAYER_DIR + VENV))


def added_tree(ctr: dagger.Container) -> dagger.Directory:
    """What ``with_install`` kept, as a tree from / (its files under opt/venv), every folder
    at the fixed time: the layer ``with_tree`` lays."""
    return compat.shared(ctr.directory(_LAYER_DIR))


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
    return (
        dag.directory().with_directory(path.strip("/"), directory).with_timestamps(FIXED_MTIME)
    )
