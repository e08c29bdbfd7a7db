"""Each exported image's CycloneDX SBOM against the real engine: valid by the CycloneDX 1.6
schema, and listing exactly what the image holds, read from the image another way."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from dagger import dag
from packaging.utils import canonicalize_name

from tests.conftest import copy_example, pipeline_in

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

# Every top-level module a distribution installs (from its RECORD), imported in the image.
IMPORT_ALL = """
import importlib, importlib.metadata as md, json, sys
failed = []
for dist in md.distributions():
    tops = {f.parts[0].removesuffix(".py") for f in dist.files or [] if len(f.parts) > 0}
    for top in sorted(tops):
        if top.endswith((".dist-info", ".pth", ".so")) or top in ("..", "__pycache__", "bin"):
            continue
        if not top.isidentifier():
            continue
        try:
            importlib.import_module(top)
        except Exception as exc:
            failed.append("%s (%s): %r" % (top, dist.metadata["Name"], exc))
print(json.dumps(failed))
"""


async def test_sbom_lists_exactly_what_the_image_holds(tmp_path: Path, base_image: str):
    repo = copy_example(tmp_path / "repo", services=("worker",))
    out, report = tmp_path / "out", tmp_path / "report.json"
    done = pipeline_in(repo, base_image, "export", "--out", str(out), "--no-test",
                       "--report", str(report))  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text())["services"][0]
    assert result["sbom"] == str(out / "worker.cdx.json")
    text = (out / "worker.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    bom = json.loads(text)
    assert bom["metadata"]["component"]["hashes"][0]["content"] == result["image"]["digest"][7:]
    listed = {c["name"].lower(): c for c in bom["components"]}
    pypi = {(canonicalize_name(c["name"]), c["version"]) for c in bom["components"]
            if c["purl"].startswith("pkg:pypi/")}  # fmt: skip
    deb = {(c["name"], c["version"]) for c in bom["components"] if c["purl"].startswith("pkg:deb/")}

    image = dag.container().import_(dag.host().file(str(out / "worker.tar")))
    site = await image.with_exec(
        ["sh", "-c", "ls -d /opt/venv/lib/python3*/site-packages/*.dist-info"]
    ).stdout()
    held = set()
    for line in site.split():
        name, version = line.rsplit("/", 1)[1].removesuffix(".dist-info").rsplit("-", 1)
        held.add((canonicalize_name(name), version))
    assert pypi == held
    assert {"pydantic", "structlog"} <= {name for name, _ in pypi}  # the tiers' packages
    dpkg = await image.with_exec(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"]).stdout()
    assert deb == {tuple(line.split(" ", 1)) for line in dpkg.splitlines() if line}
    assert "tini" in listed  # the service's own apt package
    assert "gcc" not in listed  # the builder's compilers never reach the runtime image
    assert listed["pydantic"]["licenses"], "licenses come from the installed metadata"
    assert all(c["hashes"][0]["alg"] == "SHA-256" for c in bom["components"]
               if c["purl"].startswith("pkg:pypi/"))  # fmt: skip
    failed = await image.with_exec(["/opt/venv/bin/python", "-c", IMPORT_ALL]).stdout()
    assert json.loads(failed.strip().splitlines()[-1]) == []
