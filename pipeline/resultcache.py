"""Outcomes never computed twice: verified results and passed checks, stored by a digest of
everything that made them (in the spirit of Bazel's action cache and Turborepo).

``<project>/.pipeline/cache/<scope>/`` holds, per cache scope like the cache volumes:
  results/<key>.json   a service's whole verified result (image facts, checks, tier facts)
  checks/<key>.json    checks passed on an image of this content (smoke, health, unit)
  tiers/<key>.json     a tier image's facts
  inputs/<service>.json  the inputs of the service's last build, to say why it rebuilds
A damaged entry is ignored with a warning; every write is atomic. The folder carries its
own .gitignore, so it never shows as a change.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pipeline.log import get_logger

FORMAT = 1
FOLDER = ".pipeline"


class ResultCache:
    def __init__(self, root: Path, scope: str, read: bool = True, write: bool = True) -> None:
        self.top = root / FOLDER
        self.dir = self.top / "cache" / scope
        self.read = read  # --no-cache: nothing is replayed, fresh results are still stored
        self.write = write

    def _path(self, kind: str, name: str) -> Path:
        return self.dir / kind / f"{name}.json"

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The entry, or None when absent, disabled or unreadable (then with a warning)."""
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
        if not isinstance(entry, dict) or entry.get("format") != FORMAT or "value" not in entry:
            get_logger().warning("cache_entry_ignored", file=str(path), reason="unknown format")
            return None
        value = entry["value"]
        return value if isinstance(value, dict) else None

    def put(self, kind: str, name: str, value: dict[str, Any]) -> None:
        """Store an entry atomically (a unique temporary file renamed into place)."""
        if self.write:
            write_entry(self.top, self._path(kind, name), value)


def write_entry(top: Path, path: Path, value: dict[str, Any]) -> None:
    """Write ``value`` to ``path`` (under ``top``, the git-ignored ``.pipeline`` folder) at
    once: a unique temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ignore = top / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# the pipeline's result cache: never committed\n*\n")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"format": FORMAT, "value": value}, fh, indent=1, sort_keys=True)
    Path(tmp).replace(path)
