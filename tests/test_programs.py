"""The programs that run inside images (pipeline/engine/programs), run here on the host as an
image runs them: no engine, the same file."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

from pipeline.engine import inventory
from pipeline.engine.programs import inventory as inventory_program

DPKG_STATUS = """\
Package: tini
Status: install ok installed
Architecture: amd64
Version: 0.19.0-1
Description: tiny but valid init
 continued: not a field

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""


def test_the_shipped_inventory_is_this_file():
    shipped = resources.files("pipeline.engine.programs").joinpath("inventory.py")
    assert inventory.program_text() == shipped.read_text(encoding="utf-8")


def test_inventory_lists_installed_debian_packages_only():
    assert inventory_program.debian_packages(DPKG_STATUS) == [
        {"name": "tini", "version": "0.19.0-1", "arch": "amd64"}
    ]


def test_inventory_run_as_a_program_prints_what_this_python_has_installed():
    done = subprocess.run(
        [sys.executable, inventory_program.__file__], capture_output=True, text=True, check=True
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    names = {d["name"].lower(): d for d in found["python"]}
    assert "pytest" in names
    assert names["pytest"]["version"] == __import__("pytest").__version__
    assert len(names["pytest"]["record_sha256"]) == 64
    assert "MIT" in names["pytest"]["classifiers"] or names["pytest"]["expression"]
    assert isinstance(found["debian"], list)
