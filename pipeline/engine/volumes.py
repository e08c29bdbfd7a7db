"""A scope's cache volumes packed to and unpacked from host tarballs, by a helper container
that mounts each volume exactly as the builders do (engine/images.py's ``with_cache``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dagger import dag

from pipeline.engine import compat, images

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    import dagger

    from pipeline.core.settings import BuildSettings

MOUNT = "/carried"
PACKED = "/volume.tar.gz"  # in the helper container's own filesystem, not in the volume


def _tool(settings: BuildSettings, tool: str) -> dagger.Container:
    """A container with the scope's volume of ``tool`` mounted; never cached itself, since
    a volume's contents are not part of any cache key."""
    return (
        dag.container()
        .from_(settings.base_image)
        .with_(images.with_cache(MOUNT, settings.cache_scope, tool))
        .with_env_variable("PIPELINE_CARRIED_AT", str(time.time_ns()))
    )


async def pack(settings: BuildSettings, tools: Sequence[str], folder: Path) -> dict[str, Path]:
    """Each tool's volume as ``folder/<tool>.tar.gz``."""
    written = {}
    for tool in tools:
        packed = _tool(settings, tool).with_(compat.run(["tar", "-C", MOUNT, "-czf", PACKED, "."]))
        target = folder / f"{tool}.tar.gz"
        await packed.file(PACKED).export(str(target))
        written[tool] = target
    return written


async def unpack(settings: BuildSettings, tarballs: Mapping[str, Path]) -> None:
    """Each tool's volume filled from its (checked) tarball."""
    for tool, tarball in tarballs.items():
        await (
            _tool(settings, tool)
            .with_mounted_file(PACKED, dag.host().file(str(tarball)))
            .with_(compat.run(["tar", "-xzf", PACKED, "-C", MOUNT]))
            .sync()
        )
