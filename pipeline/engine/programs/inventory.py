"""Run inside an image by its venv's Python: prints what is installed, as one JSON line:
every Python distribution (read with importlib.metadata) and every Debian package dpkg
records as installed. Standard library only: it runs in any image."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
from pathlib import Path
from typing import Any

DPKG_STATUS = Path("/var/lib/dpkg/status")
LICENSE_CLASSIFIER = "License :: OSI Approved :: "


def _first(meta: md.PackageMetadata, field: str) -> str:
    return next(iter(meta.get_all(field) or []), "")


def python_distributions() -> list[dict[str, Any]]:
    found = []
    for dist in md.distributions():
        meta = dist.metadata
        record = dist.read_text("RECORD")
        classifiers = meta.get_all("Classifier") or []
        found.append(
            {
                "name": meta["Name"],
                "version": dist.version,
                "expression": _first(meta, "License-Expression"),
                "license": _first(meta, "License").strip(),
                "classifiers": [
                    c.rsplit(" :: ", 1)[-1] for c in classifiers if c.startswith(LICENSE_CLASSIFIER)
                ],
                "record_sha256": hashlib.sha256(record.encode()).hexdigest() if record else "",
            }
        )
    return found


def debian_packages(status: str) -> list[dict[str, str]]:
    """The installed packages of a dpkg status file's text."""
    found = []
    for paragraph in status.split("\n\n"):
        fields = {}
        for line in paragraph.splitlines():
            if line[:1] not in (" ", "\t") and ": " in line:
                key, value = line.split(": ", 1)
                fields[key] = value
        if fields.get("Status", "").endswith(" installed"):
            pairs = (("name", "Package"), ("version", "Version"), ("arch", "Architecture"))
            found.append({k: fields.get(v, "") for k, v in pairs})
    return found


def main() -> None:
    try:
        status = DPKG_STATUS.read_text(encoding="utf-8")
    except FileNotFoundError:
        status = ""
    print(json.dumps({"python": python_distributions(), "debian": debian_packages(status)}))  # noqa: T201 - the program's output


if __name__ == "__main__":
    main()
