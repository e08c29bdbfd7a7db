"""Run in a child tier's parent's builder, with the child's layer (a tree from /) mounted at
TREE: checks that laying the layer before the layers of the tiers between the root tier and
the child gives the same files as laying it after them. It does when no file, link or other
non-folder of the layer is already in the builder, and each folder both hold has the same
type, mode and owner in both: the layers then only meet in folders, which every layer lays
at the same fixed time.

Two packages that install the same file (``jwt`` and ``PyJWT`` both write ``jwt/__init__.py``)
are an error that names the files and the fix: the order the tiers' installs ran in would
decide which package's file the image kept.

Usage: ``python -B -c TEXT TREE TIER``. Standard library only.
"""

# os on purpose: the walk's paths are strs, and lstat never follows a link.
# ruff: noqa: PTH118

from __future__ import annotations

import os
import stat
import sys

SHOWN = 10  # how many paths the error names
FIX = (
    "fix: keep only one of the packages that install these files (both tiers' requirements, "
    "and what they pull in, decide which); two packages that write the same files leave the "
    "image holding one package's files in the other's place"
)


def meets(tree: str, root: str = "/") -> list[str]:
    """The paths (from /) of the tree's entries that ``root`` already holds otherwise than as
    a folder of the same mode and owner."""
    out = []
    for folder, dirs, files in os.walk(tree):
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            target = "/" + os.path.relpath(path, tree)
            try:
                there = os.lstat(os.path.join(root, target.lstrip("/")))
            except FileNotFoundError:
                continue
            here = os.lstat(path)
            folders = stat.S_ISDIR(here.st_mode) and stat.S_ISDIR(there.st_mode)
            same = (here.st_mode, here.st_uid, here.st_gid) == (
                there.st_mode,
                there.st_uid,
                there.st_gid,
            )
            if not (folders and same):
                out.append(target)
    return sorted(out)


def main(argv: list[str]) -> int:
    if len(argv) != len(["TREE", "TIER"]):
        sys.stderr.write("usage: disjoint.py TREE TIER\n")
        return 2
    tree, tier = argv
    found = meets(tree)
    if not found:
        return 0
    shown = ", ".join(found[:SHOWN])
    more = f" and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    sys.stderr.write(
        f"pipeline: tier {tier!r} installs files that the tiers it extends already hold: "
        f"{shown}{more}; {FIX}\n"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
