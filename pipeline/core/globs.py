"""Path globs as Dagger's include/exclude read them, for showing a plan without an engine.

`**` spans folders, `*` and `?` stay inside one, and a pattern that names a folder covers
everything below it.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable


@functools.cache  # a monorepo's services share their patterns: each is compiled once
def compile_glob(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip("/")
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + "(?:/.*)?")


def compile_all(patterns: Iterable[str]) -> list[re.Pattern[str]]:
    return [compile_glob(p) for p in patterns]


def matches(compiled: list[re.Pattern[str]], path: str) -> bool:
    return any(rx.fullmatch(path) for rx in compiled)


def is_ignored(ignored: frozenset[str], rel: str) -> bool:
    """Whether git ignores ``rel``: named itself, or below a folder it ignores ("dir/")."""
    if rel in ignored:
        return True
    cut = rel.find("/")
    while cut != -1:
        if rel[: cut + 1] in ignored:
            return True
        cut = rel.find("/", cut + 1)
    return False


def ignored_below(ignored: frozenset[str], folder: str) -> frozenset[str]:
    """The root-relative ``ignored`` paths below ``folder``, relative to it."""
    prefix = "" if folder in ("", ".") else f"{folder}/"
    return frozenset(p[len(prefix) :] for p in ignored if p.startswith(prefix) and p != prefix)
