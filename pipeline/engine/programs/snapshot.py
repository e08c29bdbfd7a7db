"""Run in a builder before an install, in the same exec: records every file, link and folder
under a folder, as JSON, for ``layer.py`` to tell what the install added or changed.

A link is recorded by its target, a folder by its mode (a folder is new or not: entries come
and go in it), a file by its mode, size, mtime, inode and, when small, the SHA-256 of its bytes.
Within one exec a file nobody wrote keeps its inode, size and time; a small file rewritten with
the same bytes (uv's .lock) is told apart by content.

Usage: ``python -c TEXT FOLDER SNAPSHOT_JSON``. Standard library only.
"""

# os and os.path on purpose: paths are the strs os.walk gives (the snapshot's keys), links'
# targets are as os.readlink gives them (pathlib would normalise "./x" or "x/").
# ruff: noqa: PTH112, PTH114, PTH115, PTH118, PTH123

from __future__ import annotations

import hashlib
import json
import os
import sys

SMALL = 1 << 16  # files below this size are recorded with the SHA-256 of their content


def entry(path: str) -> list[str | int]:
    """What the snapshot records of ``path``: a link ``["link", target]``, a folder ``["dir",
    mode]``, a file ``[mode, size, mtime_ns, inode, sha256]`` (sha256 "" when not small)."""
    st = os.lstat(path)
    if os.path.islink(path):
        return ["link", os.readlink(path)]
    if os.path.isdir(path):
        return ["dir", st.st_mode]
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest() if st.st_size < SMALL else ""
    return [st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, digest]


def snapshot(root: str) -> dict[str, list[str | int]]:
    """Every entry under ``root`` (not ``root`` itself), by path."""
    out = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(base, name)
            out[path] = entry(path)
    return out


def main(argv: list[str]) -> None:
    root, where = argv
    taken = snapshot(root)
    with open(where, "w") as fh:
        json.dump(taken, fh)


if __name__ == "__main__":
    main(sys.argv[1:])
