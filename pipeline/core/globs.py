"""Path globs as Dagger's include/exclude read them, for showing a plan without an engine.

`**` spans folders, `*` and `?` stay inside one, and a pattern that names a folder covers
everything below it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable


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
