"""Run in an image with Python: a layer kept as a tree (``layer.py``'s) packed into one tar
file, or that file unpacked into the same tree again.

The archive's bytes depend only on the tree's entries (each folder's entries sorted, no
user or group names), and unpacking gives back every entry as it was: its type, mode, owner,
time and bytes, and the hard links between its files. A tree made by an exec is known to the
engine by the steps that made it; a file of a folder is known by its bytes (v0.21), so a tree
unpacked from equal bytes is the same result, however the tree was made.

A tree holds folders, files, hard links and symbolic links only (a venv's layer): any other
entry is an error naming it (exit status 3).

Usage: ``python -c TEXT pack TREE ARCHIVE`` or ``python -c TEXT unpack ARCHIVE TREE``.
Standard library only.
"""

# os and os.path on purpose: paths are joined as tarfile names them.
# ruff: noqa: PTH101, PTH103, PTH118, PTH120, PTH123, PTH211

from __future__ import annotations

import os
import shutil
import sys
import tarfile

OTHER = 3  # the exit status when the tree holds an entry of another type


def _named_by_number(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""
    return info


def pack(tree: str, archive: str) -> None:
    os.makedirs(os.path.dirname(archive), exist_ok=True)
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(tree, arcname=".", filter=_named_by_number)


def unpack(archive: str, tree: str) -> int:
    os.makedirs(tree, exist_ok=True)
    later: list[tuple[str, tarfile.TarInfo]] = []  # modes of folders and every time, last
    with tarfile.open(archive) as tar:
        for info in tar:
            path = os.path.normpath(os.path.join(tree, info.name))
            if info.isdir():
                os.makedirs(path, exist_ok=True)
            elif info.issym():
                os.symlink(info.linkname, path)
            elif info.islnk():
                os.link(os.path.normpath(os.path.join(tree, info.linkname)), path)
                continue  # one inode: its owner, mode and time are the first name's
            elif info.isreg():
                source = tar.extractfile(info)
                assert source is not None  # noqa: S101 - a regular file has its bytes
                with source, open(path, "wb") as out:
                    shutil.copyfileobj(source, out)
            else:
                sys.stderr.write(f"{info.name}: an entry of type {info.type!r}, not laid\n")
                return OTHER
            os.lchown(path, info.uid, info.gid)
            if info.isreg():
                os.chmod(path, info.mode)  # after chown, which may clear set-id bits
            later.append((path, info))
    for path, info in reversed(later):  # a folder's entries before it
        if info.isdir():
            os.chmod(path, info.mode)
        os.utime(path, (info.mtime, info.mtime), follow_symlinks=False)
    return 0


def main(argv: list[str]) -> int:
    command, source, target = argv
    if command == "pack":
        pack(source, target)
        return 0
    return unpack(source, target)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
