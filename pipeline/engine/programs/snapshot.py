"""Run in a builder before an install, in the same exec: records every file, link and folder
under a folder, as JSON, for ``layer.py`` to tell what the install added or changed.

A link is recorded by its target, a folder by its mode (a folder is new or not: entries come
and go in it), a file by its mode, size, mtime, inode and, when small, the SHA-256 of its bytes.
Within one exec a file nobody wrote keeps its inode, size and time; a small file rewritten with
the same bytes (uv's .lock) is told apart by content.

Paths matching an EXCLUDE pattern (fnmatch, against the whole path: ``/proc``,
``/var/lib/dpkg/*-old``) are left out, a folder with everything under it: mounts, caches and
files that only hold one run's bytes, when the folder is ``/``.

Usage: ``python -c TEXT FOLDER SNAPSHOT_JSON [EXCLUDE...]``. Standard library only.
"""

# os and os.path on purpose: paths are the strs os.walk gives (the snapshot's keys), links'
# targets are as os.readlink gives them (pathlib would normalise "./x" or "x/").
# ruff: noqa: PTH112, PTH114, PTH115, PTH118, PTH123

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import stat
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

SMALL = 1 << 16  # files below this size are recorded with the SHA-256 of their content


def entry(path: str) -> list[str | int]:
    """What the snapshot records of ``path``: a link ``["link", target]``, a folder ``["dir",
    mode]``, a file ``[mode, size, mtime_ns, inode, sha256]`` (sha256 "" when not small, or
    not a regular file: a fifo is never opened)."""
    st = os.lstat(path)
    if os.path.islink(path):
        return ["link", os.readlink(path)]
    if os.path.isdir(path):
        return ["dir", st.st_mode]
    digest = ""
    if stat.S_ISREG(st.st_mode) and st.st_size < SMALL:
        with open(path, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
    return [st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, digest]


def walk(root: str, excludes: Sequence[str] = ()) -> Iterator[str]:
    """Every path under ``root`` (not ``root`` itself), folders before their entries, each
    folder's entries sorted; what matches ``excludes`` is left out, folders with their
    entries."""
    for base, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _excluded(os.path.join(base, d), excludes))
        for name in sorted(dirs + files):
            path = os.path.join(base, name)
            if not _excluded(path, excludes):
                yield path


def _excluded(path: str, excludes: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in excludes)


def snapshot(root: str, excludes: Sequence[str] = ()) -> dict[str, list[str | int]]:
    """Every entry under ``root`` (not ``root`` itself) but the excluded, by path."""
    return {path: entry(path) for path in walk(root, excludes)}


def main(argv: list[str]) -> None:
    root, where, *excludes = argv
    taken = snapshot(root, excludes)
    with open(where, "w") as fh:
        json.dump(taken, fh)


if __name__ == "__main__":
    main(sys.argv[1:])
