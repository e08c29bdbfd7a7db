"""Caches carried between CI runs: a scope's cache volumes (uv, pip, apt) and its result
cache, to and from a host folder that a file cache such as ``actions/cache`` keeps.

Layout: ``DIR/<scope>/<volume>.tar.gz``, ``DIR/<scope>/results.tar.gz`` and
``DIR/<scope>/manifest.json``. ``import`` reads ``DIR/<scope>``, else the fallback scope's
folder (the default branch's), into this run's scope. An export is bounded: over the bound,
the volumes cheapest to refill are left out first, and the manifest says which.

A carried folder comes back from a cache anyone with write access to it could have filled,
so an import trusts nothing in it: the manifest and every archive it names are checked on
the host, whole, before any engine session and before anything is written (``check``).
"""

from __future__ import annotations

import errno
import gzip
import json
import math
import os
import posixpath
import shutil
import tarfile
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import ConfigError, UsageError
from pipeline.core.log import get_logger
from pipeline.edges import history
from pipeline.edges.resultcache import ResultCache

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from pipeline.core.settings import BuildSettings

    # engine/volumes.py's pack and unpack
    Pack = Callable[[BuildSettings, Sequence[str], Path], Awaitable[dict[str, Path]]]
    Unpack = Callable[[BuildSettings, Mapping[str, Path]], Awaitable[None]]

# The volumes worth carrying, most valuable first: uv's wheels and builds, pip's, then apt's
# archives and lists. (No builder step mounts pip's any more: uv is installed outside every
# scope, see images.uv_tool; it stays a volume so that exports that hold it still import.)
VOLUMES = ("uv", "pip", "apt-cache", "apt-lists")
RESULTS = "results"
MANIFEST = "manifest.json"
# the result cache's folders of entries by content key, which only grow: what no run of the
# scope's history has used stays out of an export (inputs/ holds one entry per service)
_AGEING = frozenset({"results", "checks"})
MB = 1_000_000


@dataclass(frozen=True)
class Export:
    """An export found and checked on the host: what an import may read from it."""

    folder: Path  # DIR/<scope>
    scope: str  # the scope it was exported from
    volumes: tuple[str, ...]  # the volumes it holds, each tarball checked

    def tarball(self, name: str) -> Path:
        return self.folder / f"{name}.tar.gz"


def _damaged(file: Path, field: str, problem: str, found: Path) -> ConfigError:
    return ConfigError(
        file,
        field,
        problem,
        f"this is not a whole export of `pipeline cache export`: delete {found} (or the CI "
        "cache that restored it) and export again",
    )


# ---- export


def check_target(folder: Path, scope: str, max_mb: float) -> None:
    """What would make an export fail after its engine work, found before it starts."""
    if math.isnan(max_mb) or max_mb < 0:
        raise UsageError(f"--max-size-mb: {max_mb} is not a size; fix: give 0 or more MB")
    if folder.exists() and not folder.is_dir():
        raise UsageError(
            f"cache export: {folder} is not a folder; fix: name a folder (or a path to make one)"
        )
    final = folder / scope
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise UsageError(
            f"cache export: {final} is not a folder an export can replace; fix: remove it"
        )
    # The nearest folder that is there takes the export's folders: prove a file can be
    # written in it (a temporary one, gone at once), so a refused export writes nothing.
    there = next(p for p in (folder, *folder.parents) if p.exists())
    try:
        if not there.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        with tempfile.TemporaryFile(dir=there):
            pass
    except OSError as exc:
        raise UsageError(
            f"cache export: cannot write in {folder} ({exc.strerror or exc}); "
            "fix: name a folder you can write to"
        ) from None


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
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    final = folder / scope
    if final.exists():
        shutil.rmtree(final.rename(folder / f".{scope}-old-{time.time_ns()}"))
    staging.rename(final)
    return final


def _pack_results(root: Path, scope: str, target: Path) -> tuple[int, int]:
    """The scope's result cache packed at ``target``, but for the results and checks that no
    run of its full history has used (history.window_start): without that bound every carried
    cache would keep every result ever stored, and an import would read them all. Its size
    in bytes and how many entries were left out."""
    since = history.window_start(root, scope)
    left_out = 0

    def used(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        nonlocal left_out
        folder = posixpath.dirname(posixpath.normpath(member.name))
        if since is not None and member.isfile() and folder in _AGEING and member.mtime < since:
            left_out += 1
            return None
        return member

    with tarfile.open(target, "w:gz") as tar:
        results = _results(root, scope)
        if results.is_dir():
            tar.add(results, arcname=".", filter=used)
    return target.stat().st_size, left_out


async def export(
    settings: BuildSettings, folder: Path, max_mb: float, pack: Pack
) -> dict[str, Any]:
    """Write the scope's caches under ``folder/<scope>``, replacing an earlier export whole;
    ``pack`` writes the volumes' tarballs (engine/volumes.py)."""
    scope = settings.cache_scope
    staging = _stage(folder, scope)
    try:
        packed = await pack(settings, VOLUMES, staging)
        sizes = {tool: path.stat().st_size for tool, path in packed.items()}
        results = staging / f"{RESULTS}.tar.gz"
        sizes[RESULTS], unused = _pack_results(settings.root, scope, results)
        left_out = _bound(staging, sizes, max_mb)
        manifest = {"scope": scope, "sizes": sizes, "left_out": left_out}
        final = _publish(staging, folder, scope, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    get_logger().info(
        "cache_exported",
        folder=str(final),
        sizes=sizes,
        left_out=left_out,
        unused_results_left_out=unused,
    )
    return manifest


def _stage(folder: Path, scope: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=folder, prefix=f".{scope}-"))


# ---- import: find and check on the host


def source(folder: Path, scope: str, fallback: str | None) -> Path | None:
    """The export to import for ``scope``: its own, else the fallback scope's; None when
    neither was exported. A scope folder that is there but is no export is an error, not
    a silent fallback."""
    if not folder.is_dir():
        raise UsageError(f"cache import: {folder} is not a folder; fix: name an export's folder")
    for name in (scope, fallback):
        if not name:
            continue
        found = folder / name
        if not os.path.lexists(found):
            continue
        if found.is_symlink() or not found.is_dir():
            raise _damaged(found, "", "is not a folder (a link or a file)", found)
        return found
    return None


def check(found: Path) -> Export:
    """Read the export at ``found`` whole and trust nothing in it: its manifest's shape,
    and every archive it names, member by member (``tarfile``'s ``data`` filter: no
    absolute or ``..`` paths, no link leaving the folder, no device files), before anything
    is written or an engine is asked for."""
    manifest = _manifest(found)
    sizes: dict[str, int] = manifest["sizes"]
    volumes = tuple(tool for tool in VOLUMES if tool in sizes)
    for name in (*volumes, RESULTS):
        packed = found / f"{name}.tar.gz"
        _regular(packed, found, f", but {MANIFEST} lists {name}")
        if packed.stat().st_size != sizes[name]:
            problem = f"is {packed.stat().st_size} bytes, but {MANIFEST} says {sizes[name]}"
            raise _damaged(packed, "", f"{problem} (cut short or replaced?)", found)
        _check_archive(packed, found, results=name == RESULTS)
    return Export(folder=found, scope=manifest["scope"], volumes=volumes)


def _regular(path: Path, found: Path, why: str = "") -> None:
    """An export's files are plain files in its folder: never links to elsewhere."""
    if path.is_symlink():
        raise _damaged(path, "", f"is a link, not a file{why}", found)
    if not path.exists():
        raise _damaged(path, "", f"is missing{why}", found)
    if not path.is_file():
        raise _damaged(path, "", f"is not a file{why}", found)


def _manifest(found: Path) -> dict[str, Any]:
    path = found / MANIFEST
    _regular(path, found)
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise _damaged(path, "", f"is not JSON ({exc})", found) from None
    if not isinstance(data, dict):
        raise _damaged(path, "", "is not a JSON object", found)
    extra = sorted(set(data) - {"scope", "sizes", "left_out"})
    if extra:
        raise _damaged(path, extra[0], "unknown field", found)
    if not isinstance(data.get("scope"), str):
        raise _damaged(path, "scope", f"is {data.get('scope')!r}, not a scope name", found)
    _check_sizes(path, data.get("sizes"), found)
    _check_left_out(path, data.get("left_out"), data["sizes"], found)
    return data


def _check_sizes(path: Path, sizes: object, found: Path) -> None:
    if not isinstance(sizes, dict):
        raise _damaged(path, "sizes", f"is {sizes!r}, not an object of sizes", found)
    known = (*VOLUMES, RESULTS)
    for name, size in sizes.items():
        if name not in known:
            raise _damaged(path, f"sizes.{name}", f"is not one of {', '.join(known)}", found)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _damaged(path, f"sizes.{name}", f"is {size!r}, not a number of bytes", found)
    if RESULTS not in sizes:
        raise _damaged(path, f"sizes.{RESULTS}", "is required", found)


def _check_left_out(path: Path, left_out: object, sizes: dict[str, int], found: Path) -> None:
    if not isinstance(left_out, list) or not all(isinstance(t, str) for t in left_out):
        raise _damaged(path, "left_out", f"is {left_out!r}, not a list of volumes", found)
    for tool in left_out:
        if tool not in VOLUMES or tool in sizes:
            problem = "is not a volume" if tool not in VOLUMES else "is also in sizes"
            raise _damaged(path, "left_out", f"{tool!r} {problem}", found)


class _NotInResults(tarfile.FilterError):
    """A link in a result cache, which holds only folders and JSON files."""


class _AbsoluteName(tarfile.FilterError):
    """An absolute member name: the ``data`` filter would strip its slash, we refuse it."""


class _UpName(tarfile.FilterError):
    """A member name with a '..': no export writes one, even one that stays inside."""


def _data_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    if member.name.startswith("/"):
        raise _AbsoluteName(member)
    if ".." in member.name.split("/"):
        raise _UpName(member)
    return tarfile.data_filter(member, dest)


def _results_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    if member.issym() or member.islnk():
        raise _NotInResults(member)
    return _data_filter(member, dest)


_FILTER_PROBLEMS: dict[type[tarfile.FilterError], str] = {
    _AbsoluteName: "has an absolute path",
    _UpName: "has '..' in its path",
    _NotInResults: "is a link; a result cache holds only folders and files",
    tarfile.AbsolutePathError: "has an absolute path",
    tarfile.OutsideDestinationError: "would land outside the folder",
    tarfile.SpecialFileError: "is a device or special file",
    tarfile.AbsoluteLinkError: "is a link to an absolute path",
    tarfile.LinkOutsideDestinationError: "is a link leaving the folder",
}


def _check_archive(packed: Path, found: Path, *, results: bool) -> None:
    """Every member of ``packed`` as extracting it with the ``data`` filter would judge it,
    and none lying under a link an earlier member made, read to the end (a cut or corrupt
    archive fails here, not half-way through an import)."""
    # A folder that does not exist: the filter resolves paths against it without following
    # any link of this host.
    dest = str(Path(tempfile.gettempdir(), f"pipeline-check-{uuid.uuid4().hex}"))
    judge = _results_filter if results else _data_filter
    links: set[str] = set()
    try:
        with tarfile.open(packed, "r:gz") as tar:
            for member in tar:
                field = f"member {member.name!r}"
                try:
                    judge(member, dest)
                except tarfile.FilterError as exc:
                    problem = _FILTER_PROBLEMS.get(type(exc), str(exc))
                    raise _damaged(packed, field, problem, found) from None
                name = posixpath.normpath(member.name)
                parent = posixpath.dirname(name)
                while parent not in ("", "."):
                    if parent in links:
                        raise _damaged(packed, field, f"lies under the link {parent!r}", found)
                    parent = posixpath.dirname(parent)
                if member.issym():
                    links.add(name)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        problem = f"is not a whole gzip tarball ({exc or type(exc).__name__})"
        raise _damaged(packed, "", problem, found) from None


# ---- import: write


def _stage_results(checked: Export, results: Path) -> Path:
    """The export's result cache unpacked beside the scope's, to be moved in only once the
    whole import succeeded."""
    top = results.parent.parent  # .pipeline: git-ignored by its own .gitignore
    results.parent.mkdir(parents=True, exist_ok=True)
    ignore = top / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# the pipeline's result cache: never committed\n*\n")
    staging = Path(tempfile.mkdtemp(dir=results.parent, prefix=f".import-{results.name}-"))
    try:
        with tarfile.open(checked.tarball(RESULTS), "r:gz") as tar:
            # checked whole by check(); the filter judges every member again as it lands
            tar.extractall(staging, filter=_results_filter)  # noqa: S202
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _move_in(staging: Path, results: Path) -> None:
    for path in sorted(staging.rglob("*")):
        if path.is_file() and not path.is_symlink():
            target = results / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.replace(target)
    shutil.rmtree(staging)


async def import_(settings: BuildSettings, checked: Export, unpack: Unpack) -> None:
    """Fill the scope's volumes (``unpack``: engine/volumes.py) and result cache from a
    checked export."""
    results = _results(settings.root, settings.cache_scope)
    staging = _stage_results(checked, results)
    try:
        await unpack(settings, {tool: checked.tarball(tool) for tool in checked.volumes})
        _move_in(staging, results)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    get_logger().info("cache_imported", source=str(checked.folder), scope=settings.cache_scope)
