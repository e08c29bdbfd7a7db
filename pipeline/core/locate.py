"""Where the project is: the nearest folder with a pipeline config, and its TOML files read
with errors that name the file. Light on purpose: ``plan`` finds the project before it knows
whether the config models are needed at all."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError

__all__ = ["find_root", "read_toml"]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except UnicodeDecodeError as exc:
        raise ConfigError(
            path, "", f"is not UTF-8 text (byte {exc.start})", "save the file as UTF-8"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML ({exc})", "correct the TOML syntax") from exc
    except OSError as exc:
        raise ConfigError(path, "", f"cannot be read ({exc.strerror})", "check the path") from exc


def _has_config(folder: Path) -> bool:
    if (folder / "pipeline.toml").is_file():
        return True
    pyproject = folder / "pyproject.toml"
    if not pyproject.is_file():
        return False
    try:
        return "pipeline" in read_toml(pyproject).get("tool", {})
    except ConfigError:
        return False


def find_root(start: Path) -> Path:
    """The nearest folder, from ``start`` upward, with a pipeline config (as git, uv and ruff
    find theirs)."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if _has_config(folder):
            return folder
    raise ConfigError(
        start,
        "",
        "no pipeline.toml or [tool.pipeline] in pyproject.toml here or in any parent folder",
        "run from inside the monorepo, pass --project-dir, or add a pipeline.toml at its root",
    )
