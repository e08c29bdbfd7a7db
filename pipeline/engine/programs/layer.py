"""Run in a builder after an install, in the same exec as ``snapshot.py``: keeps every file,
link or folder under a folder that is new or changed since the snapshot, in a layer of its
own, every entry at one fixed time.

The engine's Directory.diff compares two snapshots' metadata and, depending on its cache
history, may keep files the lower layer already has; this decides by content instead. The
layer's files are hard links to the folder's (no copy; a copy only where a link cannot be
made), and every entry gets the fixed time there, so no copy is made for timestamps either.
Folders, those made only to hold a new entry included, and links carry the mode and owner of
the folder's own. The layer is a tree from / (the folder's entries under TOP/FOLDER), so that
the folders above the folder carry the fixed time too. TOP is emptied first.

Paths matching an EXCLUDE pattern (as ``snapshot.py`` takes them) are never kept. A layer
cannot delete: with ``--no-removals``, an entry of the snapshot that is gone is an error (exit
status 3, the paths on stderr), as an install that removed files cannot be laid as a tree.

Usage: ``python -c TEXT FOLDER SNAPSHOT_JSON TOP SECONDS [--no-removals] [EXCLUDE...]``.
Standard library only.
"""

# os and os.path on purpose: paths are the strs os.walk gives (the snapshot's keys), links'
# targets are as os.readlink gives them (pathlib would normalise "./x" or "x/").
# ruff: noqa: PTH103, PTH112, PTH114, PTH115, PTH118, PTH120, PTH123, PTH211

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

NO_REMOVALS = "--no-removals"
REMOVED = 3  # the exit status when --no-removals finds an entry gone
SHOWN = 20  # how many removed paths the error names


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


def folder(path: str, target: str) -> None:
    """``target`` as a folder with the mode and owner of the folder ``path``."""
    st = os.lstat(path)
    os.makedirs(target, exist_ok=True)
    os.chown(target, st.st_uid, st.st_gid)
    shutil.copystat(path, target)  # after chown, which may clear set-id bits


def keep(path: str, target: str) -> None:
    """``path`` at ``target`` in the layer: a link as a link, a folder as a folder, each with
    its mode and owner, a file as a hard link to it (a copy where that fails). The folders
    above ``target`` that the layer lacks are made as the folders above ``path`` are."""
    missing = []
    above, there = os.path.dirname(path), os.path.dirname(target)
    while not os.path.isdir(there):
        missing.append((above, there))
        above, there = os.path.dirname(above), os.path.dirname(there)
    for above, there in reversed(missing):
        folder(above, there)
    st = os.lstat(path)
    if os.path.islink(path):
        os.symlink(os.readlink(path), target)
        os.lchown(target, st.st_uid, st.st_gid)
    elif os.path.isdir(path):
        folder(path, target)
    else:
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
            os.chown(target, st.st_uid, st.st_gid)
            shutil.copymode(path, target)


def walk(root: str, excludes: Sequence[str] = ()) -> Iterator[str]:
    """Every path under ``root``, as ``snapshot.py`` walks it."""
    for base, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _excluded(os.path.join(base, d), excludes))
        for name in sorted(dirs + files):
            path = os.path.join(base, name)
            if not _excluded(path, excludes):
                yield path


def _excluded(path: str, excludes: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in excludes)


def make_layer(
    root: str, old: dict[str, list[str | int]], top: str, excludes: Sequence[str] = ()
) -> None:
    """What changed under ``root`` since ``old``, kept at ``top`` + ``root``, in sorted order."""
    layer = top + root
    shutil.rmtree(top, ignore_errors=True)
    os.makedirs(layer)
    for path in walk(root, excludes):
        if unchanged(path, os.lstat(path), old):
            continue
        keep(path, os.path.join(layer, os.path.relpath(path, root)))


def removed(old: dict[str, list[str | int]], excludes: Sequence[str] = ()) -> list[str]:
    """The entries of the snapshot ``old`` that are gone, but the excluded."""
    return sorted(p for p in old if not os.path.lexists(p) and not _excluded(p, excludes))


def fix_times(top: str, when: int) -> None:
    """Every entry under ``top``, and ``top``, at ``when`` (links themselves, not targets)."""
    for base, dirs, files in os.walk(top, topdown=False):
        for name in files + dirs:
            os.utime(os.path.join(base, name), (when, when), follow_symlinks=False)
    os.utime(top, (when, when))


def main(argv: list[str]) -> int:
    root, before, top, when, *rest = argv
    strict = NO_REMOVALS in rest
    excludes = [arg for arg in rest if arg != NO_REMOVALS]
    with open(before) as fh:
        old = json.load(fh)
    gone = removed(old, excludes) if strict else []
    if gone:
        shown = "\n  ".join(gone[:SHOWN]) + ("\n  ..." if len(gone) > SHOWN else "")
        sys.stderr.write(
            f"the install removed {len(gone)} entries, which a layer cannot remove:\n  {shown}\n"
        )
        return REMOVED
    make_layer(root, old, top, excludes)
    fix_times(top, int(when))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
