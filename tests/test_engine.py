"""The engine the harness brings up is real: it pulls the base image, installs a PyPI
package through a cache volume, runs it and exports an OCI image."""

from __future__ import annotations

import importlib.util
import tarfile
import time
from typing import TYPE_CHECKING

import pytest
from dagger import dag

from tests.conftest import ROOT, skopeo, value_of

# The harness's own check (scripts/engine status), examined here in more depth.
_spec = importlib.util.spec_from_file_location("engine_check", ROOT / "scripts/engine_check.py")
assert _spec is not None and _spec.loader is not None
engine_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(engine_check)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]


async def test_pull_install_through_cache_volume_run_and_export(base_image: str, tmp_path: Path):
    volume = dag.cache_volume("tests-engine-uv")
    marker = str(time.time_ns())  # a fresh exec each run, so the cache volume is really used
    ctr = engine_check.six_with_uv(base_image, volume, marker)
    assert value_of(await ctr.stdout(), "six") == "1.16.0"
    # the downloaded wheel is in the cache volume, shared with later builds, not in the image
    cached = await (
        dag.container()
        .from_(base_image)
        .with_mounted_cache("/c", volume)
        .with_env_variable("RUN_MARKER", marker)
        .with_exec(["sh", "-c", "echo files=$(find /c -path '*six*' -name '*.py' | wc -l)"])
        .stdout()
    )
    assert int(value_of(cached, "files")) > 0
    image_only = ctr.without_mount(engine_check.UV_CACHE).with_exec(
        ["sh", "-c", f"echo cached_in_image=$(ls -A {engine_check.UV_CACHE} 2>/dev/null | wc -l)"]
    )
    assert value_of(await image_only.stdout(), "cached_in_image") == "0"
    tarball = tmp_path / "six.tar"
    await ctr.export(str(tarball))
    inspected = skopeo("inspect", f"oci-archive:{tarball}")
    assert len(inspected["Layers"]) >= 2
    with tarfile.open(tarball) as tar:
        assert "index.json" in tar.getnames()
