"""scripts/engine's host install on a host that lacks what a fresh machine lacks: the script
runs with a PATH holding only a shell's basics, a Docker *client* and an apt-get that records
what it is asked to install."""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING

from tests.conftest import ROOT

if TYPE_CHECKING:
    from pathlib import Path

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
