"""Prove the engine is real: pull the base image, install a PyPI package with uv through a
cache volume, run the result, and export it as an OCI tarball.

Run by ``scripts/engine status`` with the environment that ``scripts/engine env`` prints;
tests/test_engine.py checks the same container in more depth.
"""

from __future__ import annotations

import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import anyio
import dagger
from dagger import dag

UV_VERSION = "0.13.9"
CA = "/run/secrets/ca.pem"
UV_CACHE = "/cache/uv"


def with_host_ca(ctr: dagger.Container) -> dagger.Container:
    """The host's CA bundle (PIPELINE_CA_BUNDLE, an intercepting proxy's CA in it) as a secret
    file for steps that fetch; the system bundle when none is given."""
    bundle = os.environ.get("PIPELINE_CA_BUNDLE")
    if not bundle:
        return ctr.with_env_variable("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
    secret = dag.set_secret("engine-check-ca", Path(bundle).read_text())
    return ctr.with_mounted_secret(CA, secret).with_env_variable("SSL_CERT_FILE", CA)


def six_with_uv(base: str, volume: dagger.CacheVolume, marker: str = "") -> dagger.Container:
    """``six`` installed by uv into a venv, uv's cache in ``volume``; prints ``six=<version>``.
    A new ``marker`` makes the install run again instead of coming from the engine's cache."""
    venv_python = "/opt/venv/bin/python"
    return (
        dag.container()
        .from_(base)
        .with_(with_host_ca)
        .with_exec(["python3", "-m", "venv", "/opt/uv"])
        .with_exec(
            ["sh", "-c", f'/opt/uv/bin/pip install -q --cert "$SSL_CERT_FILE" uv=={UV_VERSION}']
        )
        .with_mounted_cache(UV_CACHE, volume)
        .with_env_variable("UV_CACHE_DIR", UV_CACHE)
        .with_env_variable("UV_SYSTEM_CERTS", "1")
        .with_env_variable("UV_LINK_MODE", "copy")
        .with_env_variable("RUN_MARKER", marker)
        .with_exec(["/opt/uv/bin/uv", "venv", "-q", "--python", "python3", "/opt/venv"])
        .with_exec(
            ["/opt/uv/bin/uv", "pip", "install", "-q", "--python", venv_python, "six==1.16.0"]
        )
        .with_exec([venv_python, "-c", "import six; print('six=' + six.__version__)"])
    )


async def check() -> int:
    base = os.environ.get("PIPELINE_BASE_IMAGE", "localhost:5000/bookworm-python:3.11")
    started = time.monotonic()
    async with dagger.connection(dagger.Config(log_output=sys.stderr)):
        ctr = six_with_uv(base, dag.cache_volume("engine-check-uv"))
        # The engine's CA-certificate hook writes lines of its own around the command's.
        lines = (await ctr.stdout()).splitlines()
        out = next((ln.strip() for ln in lines if ln.startswith("six=")), "")
        with tempfile.TemporaryDirectory() as tmp:
            tarball = Path(tmp) / "check.tar"
            await ctr.export(str(tarball))
            with tarfile.open(tarball) as tar:
                names = set(tar.getnames())
            size = tarball.stat().st_size
    if out != "six=1.16.0" or "index.json" not in names:
        print(f"engine check failed: output {out!r}, tarball entries {sorted(names)[:5]}")
        return 1
    print(
        f"engine ok: {base} pulled, six installed by uv through a cache volume, ran ({out}), "
        f"exported an OCI tarball of {size / 1e6:.1f} MB in {time.monotonic() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(check))
