"""Run in a builder after an install, in the same exec as ``snapshot.py``: keeps every file,
link or folder under a folder that is new or changed since the snapshot, in a layer of its
own, every entry at one fixed time.

The engine's Directory.diff compares two snapshots' metadata and, depending on its cache
history, may keep files the lower layer already has; this decides by content instead. The
layer's files are hard links to the folder's (no copy; a copy only where a link cannot be
made), and every entry gets the fixed time there, so no copy is made for timestamps either.
The layer is a tree from / (the folder's entries under TOP/FOLDER), so that the folders above
the folder carry the fixed time too. TOP is emptied first.

Usage: ``python -c TEXT FOLDER SNAPSHOT_JSON TOP SECONDS``. Standard library only.
"""

# os and os.path on purpose: paths are the strs os.walk gives (the snapshot's keys), links'
# targets are as os.readlink gives them (pathlib would normalise "./x" or "x/").
# ruff: noqa: PTH103, PTH112, PTH114, PTH115, PTH118, PTH120, PTH123, PTH211

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys


def unchanged(path: str, st: os.stat_result, old: dict[str, list[str | int]]) -> bool:
    """Whether ``path`` (``st`` its lstat) is as the snapshot ``old`` recorded it."""
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


def keep(path: str, target: str) -> None:
    """``path`` at ``target`` in the layer: a link as a link, a folder as a folder with its
    mode, a file as a hard link to it (a copy where that fails)."""
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


def make_layer(root: str, old: dict[str, list[str | int]], top: str) -> None:
    """What changed under ``root`` since ``old``, kept at ``top`` + ``root``, in sorted order."""
    layer = top + root
    shutil.rmtree(top, ignore_errors=True)
    os.makedirs(layer)
    for base, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(base, name)
            if unchanged(path, os.lstat(path), old):
                continue
            keep(path, os.path.join(layer, os.path.relpath(path, root)))


def fix_times(top: str, when: int) -> None:
    """Every entry under ``top``, and ``top``, at ``when`` (links themselves, not targets)."""
    for base, dirs, files in os.walk(top, topdown=False):
        for name in files + dirs:
            os.utime(os.path.join(base, name), (when, when), follow_symlinks=False)
    os.utime(top, (when, when))


def main(argv: list[str]) -> None:
    root, before, top, when = argv[0], argv[1], argv[2], int(argv[3])
    with open(before) as fh:
        old = json.load(fh)
    make_layer(root, old, top)
    fix_times(top, when)


if __name__ == "__main__":
    main(sys.argv[1:])
