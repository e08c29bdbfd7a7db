"""Outcomes never computed twice: verified results and passed checks, stored by a digest of
everything that made them (in the spirit of Bazel's action cache and Turborepo).

``<project>/.pipeline/cache/<scope>/`` holds, per cache scope like the cache volumes:
  results/<key>.json   a service's whole verified result (image facts, checks, tier facts)
  checks/<key>.json    checks passed on an image of this content (smoke, health, unit)
  inputs/<service>.json  the inputs of the service's last build, to say why it rebuilds
  history.jsonl        the figures of the scope's last runs (history.py)
Every entry proves itself: it names its kind and the key it answers, and carries a digest of
both and of its value. An entry that does not check out (damaged, edited, copied under another
key, of another format) is ignored with a warning, and the work it would have saved is done
again. Every write is atomic. The folder carries its own .gitignore, so it never shows as a
change. A run that replays an entry marks it as used (its modification time), so that an
export can leave out what no recent run has used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.log import get_logger

if TYPE_CHECKING:
    from pipeline.core.outcomes import Kind

FORMAT = 2
FOLDER = ".pipeline"


def seal(kind: str, key: str, value: Any) -> str:  # noqa: ANN401 - any JSON value
    """The digest an entry carries of what it says: its kind, its key and its value."""
    encoded = json.dumps([kind, key, value], sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(encoded.encode()).hexdigest()


class ResultCache:
    def __init__(self, root: Path, scope: str, read: bool = True, write: bool = True) -> None:
        self.top = root / FOLDER
        self.dir = self.top / "cache" / scope
        self.read = read  # --no-cache: nothing is replayed, fresh results are still stored
        self.write = write

    def _path(self, kind: Kind, name: str) -> Path:
        return self.dir / kind / f"{name}.json"

    def get(self, kind: Kind, name: str) -> dict[str, Any] | None:
        """The entry's value, or None when absent, disabled, unreadable or not proving itself
        (then with a warning)."""
        if not self.read:
            return None
        path = self._path(kind, name)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            get_logger().warning("cache_entry_ignored", file=str(path), reason=str(exc))
            return None
        value = proven(entry, kind, name)
        if value is None:
            reason = "it does not prove itself (its digest, kind or key do not match)"
            get_logger().warning("cache_entry_ignored", file=str(path), reason=reason)
        elif self.write:
            _used(path)
        return value

    def put(self, kind: Kind, name: str, value: dict[str, Any]) -> None:
        """Store an entry atomically (a unique temporary file renamed into place)."""
        if self.write:
            sealed = {"kind": str(kind), "key": name, "digest": seal(kind, name, value)}
            write_entry(self.top, self._path(kind, name), value, sealed)


def _used(path: Path) -> None:
    """Mark an entry as used now (its modification time): an export carries only the entries
    the runs in the scope's history used (carry.py). Best effort: a file that cannot be
    touched only risks being left out of an export."""
    with contextlib.suppress(OSError):
        os.utime(path)


def proven(entry: object, kind: str, key: str) -> dict[str, Any] | None:
    """The value of a stored entry when it is of this format, kind and key, and its digest
    is the digest of what it says; else None."""
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        return None
    value = entry.get("value")
    if entry.get("kind") != kind or entry.get("key") != key or not isinstance(value, dict):
        return None
    try:
        digest = seal(kind, key, value)
    except (TypeError, ValueError):
        return None
    return value if entry.get("digest") == digest else None


def ignored_folder(top: Path) -> Path:
    """``top`` (the project's ``.pipeline`` folder), made if need be, with the .gitignore that
    keeps it out of git."""
    top.mkdir(parents=True, exist_ok=True)
    ignore = top / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# the pipeline's result cache: never committed\n*\n")
    return top


def write_entry(
    top: Path, path: Path, value: dict[str, Any], extra: dict[str, str] | None = None
) -> None:
    """Write ``value`` (with ``extra`` fields beside it) to ``path`` (under ``top``, the
    git-ignored ``.pipeline`` folder) at once: a unique temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ignored_folder(top)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"format": FORMAT, **(extra or {}), "value": value}, fh, indent=1, sort_keys=True)
    Path(tmp).replace(path)
