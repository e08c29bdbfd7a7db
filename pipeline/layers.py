"""Venv layers decided in the builder: precompiled bytecode, and what an install added to a
venv, by content. Steps only (Container -> Container); no I/O.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from pipeline import compat

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
_COMPILE = """
import importlib.util, os, pathlib, py_compile, sys
from concurrent.futures import ProcessPoolExecutor
mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
def one(src):
    pyc = importlib.util.cache_from_source(src)
    py_compile.compile(src, cfile=pyc, dfile=src, quiet=2, invalidation_mode=mode)
todo = [str(p) for p in sorted(pathlib.Path(sys.argv[1]).rglob("*.py"))
        if not os.path.exists(importlib.util.cache_from_source(str(p)))]
with ProcessPoolExecutor() as pool:  # every core: a tier like scipy's holds thousands of files
    list(pool.map(one, todo, chunksize=32))
"""


def _compile(folder: str, python: str) -> list[str]:
    return ["env", "PYTHONHASHSEED=0", python, "-c", _COMPILE, folder]


def with_bytecode(folder: str, python: str) -> Callable[[dagger.Container], dagger.Container]:
    """Precompile ``folder`` so containers start without compiling imports."""
    return compat.run(_compile(folder, python))


# What a layer adds, decided by content in the builder: every file, link or folder of the
# venv that is new or whose bytes or mode changed since the snapshot. The engine's own
# Directory.diff compares file metadata and, depending on its cache history, may keep files
# the lower layer already has; this never does.
_SNAPSHOT = """
import hashlib, json, os, sys
root, out = sys.argv[1], {}
for base, dirs, files in os.walk(root):
    for name in dirs + files:
        path = os.path.join(base, name)
        st = os.lstat(path)
        if os.path.islink(path):
            out[path] = "link:" + os.readlink(path)
        elif os.path.isdir(path):
            out[path] = "dir:%o" % st.st_mode
        else:
            with open(path, "rb") as fh:
                out[path] = "%o:" % st.st_mode + hashlib.sha256(fh.read()).hexdigest()
json.dump(out, open(sys.argv[2], "w"))
"""
_LAYER = """
import json, os, shutil, subprocess, sys
root, before, layer = sys.argv[1], sys.argv[2], sys.argv[3]
subprocess.run([sys.executable, "-c", sys.argv[4], root, "/tmp/after.json"], check=True)
old, new = json.load(open(before)), json.load(open("/tmp/after.json"))
os.makedirs(layer)
for path in sorted(new):
    if old.get(path) == new[path]:
        continue
    target = os.path.join(layer, os.path.relpath(path, root))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if new[path].startswith("link:"):
        os.symlink(os.readlink(path), target)
    elif new[path].startswith("dir:"):
        os.makedirs(target, exist_ok=True)
        shutil.copystat(path, target)
    else:
        shutil.copy2(path, target)
"""


# Paths inside the builder container, never on the host.
_SNAPSHOT_FILE = "/tmp/pipeline-snapshot.json"  # noqa: S108
_LAYER_DIR = "/tmp/pipeline-layer"  # noqa: S108


def one_step(*commands: Sequence[str]) -> list[str]:
    """Several commands as one exec: one step of the engine's, where splitting them would
    buy no cache hit (they always change together)."""
    return ["sh", "-c", " && ".join(shlex.join(c) for c in commands)]


def with_install(
    installs: Sequence[Sequence[str]], compile_bytecode: bool, layer: bool
) -> Callable[[dagger.Container], dagger.Container]:
    """Run ``installs`` on the venv, then precompile it and, with ``layer``, keep what they
    added in a folder of its own (``added``) - all in one exec."""
    python = f"{VENV}/bin/python"
    commands = [list(c) for c in installs]
    if compile_bytecode:
        commands.append(_compile(VENV, python))
    if layer:
        snapshot = ["python3", "-c", _SNAPSHOT, VENV, _SNAPSHOT_FILE]
        keep = ["python3", "-c", _LAYER, VENV, _SNAPSHOT_FILE, _LAYER_DIR, _SNAPSHOT]
        commands = [snapshot, *commands, keep]
    return compat.run(one_step(*commands))


def added(ctr: dagger.Container) -> dagger.Directory:
    """What ``with_install(..., layer=True)`` kept: a layer of its own, with fixed mtimes."""
    return ctr.directory(_LAYER_DIR).with_timestamps(FIXED_MTIME)
