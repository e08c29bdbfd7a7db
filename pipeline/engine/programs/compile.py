"""Run in a builder by the Python that will run the code: compiles every ``.py`` under a folder
that has no ``.pyc`` yet, as unchecked-hash pycs.

Unchecked-hash pycs are valid whatever the files' mtimes (which the layers normalise); a file
a lower layer already compiled is never compiled again (so a layer holds only new pycs); and
with ``PYTHONHASHSEED=0`` in the environment the bytes are the same on every run. Folders
named in the further arguments are skipped wherever they are: in a venv, the test suites
packages ship (numpy/_core/tests, sklearn/*/tests: a third of the ai tier's modules), which a
service never imports.

Usage: ``python -c TEXT FOLDER [SKIPPED_FOLDER_NAME ...]``. Standard library only.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import pathlib
import py_compile
import sys
from concurrent.futures import ProcessPoolExecutor

MODE = py_compile.PycInvalidationMode.UNCHECKED_HASH
CHUNK = 32  # files per task sent to a worker


def compile_one(src: str) -> None:
    """One source file's pyc, where the interpreter looks for it (``__pycache__``)."""
    pyc = importlib.util.cache_from_source(src)
    py_compile.compile(src, cfile=pyc, dfile=src, quiet=2, invalidation_mode=MODE)


def to_compile(root: pathlib.Path, skip: set[str]) -> list[str]:
    """The ``.py`` files under ``root`` in sorted order, but those in a skipped folder (at any
    depth below ``root``) and those already compiled."""
    return [
        str(p)
        for p in sorted(root.rglob("*.py"))
        if not skip.intersection(p.relative_to(root).parts[:-1])
        and not os.path.exists(importlib.util.cache_from_source(str(p)))  # noqa: PTH110 - a str path, as the pyc's
    ]


def main(argv: list[str]) -> None:
    todo = to_compile(pathlib.Path(argv[0]), set(argv[1:]))
    # Forked workers (Linux's default before Python 3.14, named so as not to depend on it)
    # have ``compile_one`` in their ``__main__`` even though the program is ``-c`` text, which
    # a spawned or forkserver worker could not import.
    fork = multiprocessing.get_context("fork")
    # every core: a tier like scipy's holds thousands of files
    with ProcessPoolExecutor(mp_context=fork) as pool:
        list(pool.map(compile_one, todo, chunksize=CHUNK))


if __name__ == "__main__":
    main(sys.argv[1:])
