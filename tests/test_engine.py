"""The engine the harness brings up is real: it pulls the base image, installs a PyPI
package through a cache volume, runs it and exports an OCI image."""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
from typing import TYPE_CHECKING

import pytest
from dagger import dag

from tests.conftest import value_of

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]


async def test_pull_install_through_cache_volume_run_and_export(base_image: str, tmp_path: Path):
    volume = dag.cache_volume("tests-engine-uv")
    marker = str(time.time_ns())  # a fresh exec each run, so the cache volume is really used
    ctr = (
        dag.container()
        .from_(base_image)
        .with_exec(["python3", "-m", "venv", "/opt/uv"])
        .with_exec(
            [
                "/opt/uv/bin/pip",
                "install",
                "-q",
                "--cert",
                "/etc/ssl/certs/ca-certificates.crt",
                "uv==0.13.9",
            ]
        )
        .with_mounted_cache("/cache/uv", volume)
        .with_env_variable("UV_CACHE_DIR", "/cache/uv")
        .with_env_variable("UV_SYSTEM_CERTS", "1")
        .with_env_variable("UV_LINK_MODE", "copy")
        .with_env_variable("RUN_MARKER", marker)
        .with_exec(["/opt/uv/bin/uv", "venv", "-q", "--python", "python3", "/opt/venv"])
        .with_exec(
            [
                "/opt/uv/bin/uv",
                "pip",
                "install",
                "-q",
                "--python",
                "/opt/venv/bin/python",
                "six==1.16.0",
            ]
        )
        .with_exec(["/opt/venv/bin/python", "-c", "import six; print('six=' + six.__version__)"])
    )
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
    image_only = ctr.without_mount("/cache/uv").with_exec(
        ["sh", "-c", "echo cached_in_image=$(ls -A /cache/uv 2>/dev/null | wc -l)"]
    )
    assert value_of(await image_only.stdout(), "cached_in_image") == "0"
    tarball = tmp_path / "six.tar"
    await ctr.export(str(tarball))
    inspected = json.loads(
        subprocess.run(
            ["skopeo", "inspect", f"oci-archive:{tarball}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert len(inspected["Layers"]) >= 2
    with tarfile.open(tarball) as tar:
        assert "index.json" in tar.getnames()
