"""Caches carried between CI runs: a scope's cache volumes (uv, pip, apt) and its result
cache, to and from a host folder that a file cache such as ``actions/cache`` keeps.

Layout: ``DIR/<scope>/<volume>.tar.gz``, ``DIR/<scope>/results.tar.gz`` and
``DIR/<scope>/manifest.json``. ``import`` reads ``DIR/<scope>``, else the fallback scope's
folder (the default branch's), into this run's scope. An export is bounded: over the bound,
the volumes cheapest to refill are left out first, and the manifest says which.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagger
from dagger import dag

from pipeline import compat, images
from pipeline.errors import UsageError
from pipeline.log import get_logger
from pipeline.resultcache import ResultCache

if TYPE_CHECKING:
    from pipeline.settings import BuildSettings

# The volumes worth carrying, most valuable first: uv's wheels and builds, pip's (uv's own
# install), then apt's archives and lists.
VOLUMES = ("uv", "pip", "apt-cache", "apt-lists")
MOUNT = "/carried"
PACKED = "/volume.tar.gz"  # in the helper container's own filesystem, not in the volume
MB = 1_000_000


def _tool(settings: BuildSettings, tool: str) -> dagger.Container:
    """A container with the scope's volume of ``tool`` mounted; never cached itself, since
    a volume's contents are not part of any cache key."""
    return (
        dag.container()
        .from_(settings.base_image)
        .with_mounted_cache(MOUNT, images.cache(settings.cache_scope, tool))
        .with_env_variable("PIPELINE_CARRIED_AT", str(time.time_ns()))
    )


def _results(root: Path, scope: str) -> Path:
    """The scope's result cache folder."""
    return ResultCache(root, scope).dir


def _bound(staging: Path, sizes: dict[str, int], max_mb: float) -> list[str]:
    """Leave out volumes, cheapest to refill first, until the export fits ``max_mb``."""
    left_out = []
    for tool in reversed(VOLUMES):
        if sum(sizes.values()) <= max_mb * MB:
            break
        (staging / f"{tool}.tar.gz").unlink()
        left_out.append(tool)
        del sizes[tool]
    return left_out


def _publish(staging: Path, folder: Path, scope: str, manifest: dict[str, Any]) -> Path:
    """The staged export in place of an earlier one, whole."""
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    final = folder / scope
    if final.exists():
        shutil.rmtree(final.rename(folder / f".{scope}-old-{time.time_ns()}"))
    staging.rename(final)
    return final


def _pack_results(root: Path, scope: str, target: Path) -> int:
    with tarfile.open(target, "w:gz") as tar:
        results = _results(root, scope)
        if results.is_dir():
            tar.add(results, arcname=".")
    return target.stat().st_size


async def export(settings: BuildSettings, folder: Path, max_mb: float) -> dict[str, Any]:
    """Write the scope's caches under ``folder/<scope>``, replacing an earlier export whole."""
    scope = settings.cache_scope
    staging = _stage(folder, scope)
    try:
        sizes: dict[str, int] = {}
        for tool in VOLUMES:
            packed = _tool(settings, tool).with_(
                compat.run(["tar", "-C", MOUNT, "-czf", PACKED, "."])
            )
            target = staging / f"{tool}.tar.gz"
            await packed.file(PACKED).export(str(target))
            sizes[tool] = _size(target)
        sizes["results"] = _pack_results(settings.root, scope, staging / "results.tar.gz")
        left_out = _bound(staging, sizes, max_mb)
        manifest = {"scope": scope, "sizes": sizes, "left_out": left_out}
        final = _publish(staging, folder, scope, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    get_logger().info("cache_exported", folder=str(final), sizes=sizes, left_out=left_out)
    return manifest


def _stage(folder: Path, scope: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=folder, prefix=f".{scope}-"))


def _size(path: Path) -> int:
    return path.stat().st_size


def source(folder: Path, scope: str, fallback: str | None) -> Path | None:
    """The export to import for ``scope``: its own, else the fallback scope's."""
    if not folder.is_dir():
        raise UsageError(f"cache import: {folder} is not a folder; fix: name an export's folder")
    for name in (scope, fallback):
        if name and (folder / name / "manifest.json").is_file():
            return folder / name
    return None


async def import_(settings: BuildSettings, folder: Path, fallback: str | None) -> Path | None:
    """Fill the scope's volumes and result cache from an export; None when there is none."""
    found = source(folder, settings.cache_scope, fallback)
    if found is None:
        get_logger().warning("cache_import_empty", folder=str(folder), scope=settings.cache_scope)
        return None
    sizes = _manifest(found)["sizes"]
    for tool in VOLUMES:
        packed = found / f"{tool}.tar.gz"
        if tool not in sizes:
            continue
        unpack = ["tar", "-xzf", PACKED, "-C", MOUNT]
        await (
            _tool(settings, tool)
            .with_mounted_file(PACKED, dag.host().file(str(packed)))
            .with_(compat.run(unpack))
            .sync()
        )
    _unpack_results(found / "results.tar.gz", _results(settings.root, settings.cache_scope))
    get_logger().info("cache_imported", source=str(found), scope=settings.cache_scope)
    return found


def _manifest(found: Path) -> dict[str, Any]:
    return json.loads((found / "manifest.json").read_text())  # type: ignore[no-any-return]


def _unpack_results(packed: Path, results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    with tarfile.open(packed) as tar:
        tar.extractall(results, filter="data")
