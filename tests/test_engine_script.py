"""scripts/engine's host install on a host that lacks what a fresh machine lacks: the script
runs with a PATH holding only a shell's basics, a Docker *client* and an apt-get that records
what it is asked to install. And the engine image's upkeep of its own databases."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest

from tests.conftest import ROOT, value_of

if TYPE_CHECKING:
    from pathlib import Path

ENGINE_NAME = os.environ.get("PIPELINE_ENGINE_NAME", "pipeline-dagger-engine")
BASICS = ("bash", "sed", "dirname", "cat", "mkdir", "printf")
TOOLS = ("dockerd", "debootstrap", "docker-registry", "git", "curl", "jq", "skopeo", "tar",
         "sha256sum", "go")  # fmt: skip


def fake_host(tmp_path: Path, present: tuple[str, ...]) -> tuple[Path, Path]:
    """A bin folder with the basics, a docker client, ``present`` tools, and a recording
    apt-get; returns it and the record file."""
    bin_dir, record = tmp_path / "bin", tmp_path / "apt-get.log"
    bin_dir.mkdir()
    for name in BASICS:
        found = shutil.which(name)
        assert found, name
        (bin_dir / name).symlink_to(found)
    for name in ("docker", *present):  # a client answers `docker --version`; nothing else
        (bin_dir / name).write_text("#!/bin/sh\necho 'Docker version 28.2.2'\n")
        (bin_dir / name).chmod(0o755)
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> {record}\n')
    (bin_dir / "apt-get").chmod(0o755)
    return bin_dir, record


def host_tools(bin_dir: Path, keyring: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(bin_dir), "PIPELINE_DEBIAN_KEYRING": str(keyring), "HOME": "/nonexistent"}
    return subprocess.run(
        [str(bin_dir / "bash"), str(ROOT / "scripts/engine"), "host-tools"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_a_host_with_only_a_docker_client_gets_the_daemon_and_every_tool(tmp_path: Path):
    bin_dir, record = fake_host(tmp_path, present=())
    done = host_tools(bin_dir, tmp_path / "no-keyring.gpg")
    assert done.returncode == 0, done.stderr
    calls = record.read_text().splitlines()
    assert calls[0] == "update -qq"
    installed = set(calls[1].split()) - {"install", "-y", "-qq", "--no-install-recommends"}
    assert installed == {
        "docker.io",  # the docker client is there, the daemon is not
        "debootstrap",
        "docker-registry",
        "git",
        "curl",
        "jq",
        "skopeo",
        "tar",
        "coreutils",
        "golang-go",
        "debian-archive-keyring",
    }


def test_a_complete_host_installs_nothing(tmp_path: Path):
    bin_dir, record = fake_host(tmp_path, present=TOOLS)
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(b"")
    done = host_tools(bin_dir, keyring)
    assert done.returncode == 0, done.stderr
    assert not record.exists()


@pytest.mark.engine
def test_the_engine_image_compacts_its_databases(tmp_path: Path):
    """The engine image's entrypoint step (compact-engine-dbs) shrinks a bolt database above
    64 MB that holds free pages and leaves it intact; a smaller one, and one bbolt cannot
    read, are left as they were."""
    image = subprocess.run(
        ["docker", "inspect", "-f", "{{.Config.Image}}", ENGINE_NAME],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not image:
        pytest.fail(f"no engine container {ENGINE_NAME}: scripts/engine up first")
    script = (
        "set -e; cd /data/state; "
        # random writes in batches leave free pages behind, as the engine's GC does
        "bbolt bench -count 100000 -batch-size 500 -write-mode rnd -value-size 600 -no-sync "
        "-path big.db -work >/dev/null; "
        "bbolt bench -count 1000 -path small.db -work >/dev/null; "
        "head -c 70000000 /dev/urandom > broken.db; "
        "sha256sum small.db broken.db > before.sum; echo big=$(stat -c %s big.db); "
        "compact-engine-dbs /data; "
        "echo after=$(stat -c %s big.db); bbolt check big.db; sha256sum -c before.sum; ls"
    )
    (tmp_path / "state").mkdir()
    done = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "sh", "-v", f"{tmp_path}:/data", image, "-c",
         script],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    big, after = value_of(done.stdout, "big"), value_of(done.stdout, "after")
    assert int(big) > 64 << 20
    assert int(after) < int(big) * 0.9
    assert "OK" in done.stdout.split()  # bbolt check
    assert "small.db: OK" in done.stdout
    assert "broken.db: OK" in done.stdout
    assert ".compact" not in done.stdout  # no half-written copy left behind
