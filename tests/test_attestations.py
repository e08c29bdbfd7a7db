"""Attestations against the real engine: each image's CycloneDX SBOM (valid by the CycloneDX
1.6 schema, listing exactly what the image holds, read from the image another way) and its
SLSA provenance, beside exported tarballs and, on publish, in the registry as artifacts
referring to the image, which ``verify`` checks."""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from dagger import dag
from packaging.utils import canonicalize_name

from pipeline.edges import referrers
from pipeline.supply.attest import MEDIA_TYPE as PROVENANCE_TYPE
from tests.conftest import ROOT, copy_example, git, pipeline_in, run_pipeline, tiny_repo

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

    # the provenance beside it names the same image, the commit and the requirement files
    statement = json.loads((out / "worker.provenance.json").read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"] == [
        {"name": "worker", "digest": {"sha256": result["image"]["digest"][7:]}}
    ]
    build = statement["predicate"]["buildDefinition"]
    assert build["externalParameters"]["service"] == "worker"
    assert build["externalParameters"]["tier"] == "backend"
    deps = {d["uri"]: d["digest"] for d in build["resolvedDependencies"]}
    assert deps["git+https://example.com/acme/monorepo"] == {
        "gitCommit": git(repo, "rev-parse", "HEAD")
    }
    for name in ("base", "backend"):
        text = (ROOT / f"requirements/{name}.txt").read_bytes()
        assert deps[f"file:requirements/{name}.txt"] == {"sha256": hashlib.sha256(text).hexdigest()}
    assert any(uri.startswith("oci://") and "sha256" in d for uri, d in deps.items())
    run = statement["predicate"]["runDetails"]["metadata"]
    assert run["startedOn"] <= run["finishedOn"]


def test_published_attestations_verify_and_tampering_fails(
    tmp_path: Path, base_image: str, registry: str
):
    repo = tiny_repo(tmp_path / "repo", {"alpha": "print(1)"})
    namespace, report = f"{registry}/t{time.time_ns()}", tmp_path / "report.json"
    done = pipeline_in(
        repo, base_image, "publish", "--registry", namespace, "--report", str(report)
    )
    assert done.returncode == 0, done.stderr
    alpha = json.loads(report.read_text())["services"][0]
    digest = alpha["published"][0].rsplit("@", 1)[1]
    assert alpha["attestation"].startswith(f"{namespace}/alpha@sha256:")

    verified = run_pipeline("verify", f"{namespace}/alpha:latest")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{namespace}/alpha@{digest}" in verified.stdout
    assert "service  alpha (tier base)" in verified.stdout
    assert (
        f"git+https://example.com/acme/monorepo gitCommit:{git(repo, 'rev-parse', 'HEAD')}"
        in verified.stdout
    )
    assert "pydantic 2.9.2" in verified.stdout
    assert "verified: every attestation refers to this image" in verified.stdout

    # the registry (no referrers API) lists them under the fallback tag
    host, _, path = f"{namespace}/alpha".partition("/")
    client = referrers.Client(host)
    kinds = sorted(d["artifactType"] for d in client.referrers(path, digest))
    assert kinds == ["application/vnd.cyclonedx+json", PROVENANCE_TYPE]
    # a statement about another image, attached to this one, fails verification
    forged = {
        "_type": "https://in-toto.io/Statement/v1",
        "predicateType": "https://slsa.dev/provenance/v1",
        "subject": [{"name": "alpha", "digest": {"sha256": "0" * 64}}],
        "predicate": {},
    }
    client.attach(path, digest, PROVENANCE_TYPE, json.dumps(forged).encode(), PROVENANCE_TYPE)
    tampered = run_pipeline("verify", f"{namespace}/alpha@{digest}")
    assert tampered.returncode == 1
    assert f"is about sha256:{'0' * 64}, not this image" in tampered.stderr

    # an image nobody attested (the engine harness's base image in its local registry)
    if base_image.startswith("localhost"):
        bare = run_pipeline("verify", base_image)
        assert bare.returncode == 1
        assert "no provenance refers to this image" in bare.stderr
