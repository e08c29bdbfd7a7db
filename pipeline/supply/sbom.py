"""A CycloneDX SBOM of each image, made from what is really installed in it: every Python
distribution in its venv (read by the image's own Python with importlib.metadata) and every
Debian package dpkg records as installed. The document is built and checked against the
CycloneDX 1.6 schema with cyclonedx-python-lib.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipeline.engine import compat
from pipeline.engine.layers import VENV

if TYPE_CHECKING:
    import dagger

    from pipeline.core.stamp import Stamp

# Run by the image's venv Python: prints what is installed as JSON.
_INVENTORY = r"""
import hashlib, json, importlib.metadata as md
python = []
for dist in md.distributions():
    meta = dist.metadata
    record = dist.read_text("RECORD")
    python.append({
        "name": meta["Name"],
        "version": dist.version,
        "expression": meta.get("License-Expression") or "",
        "license": (meta.get("License") or "").strip(),
        "classifiers": [c.rsplit(" :: ", 1)[-1] for c in meta.get_all("Classifier") or []
                        if c.startswith("License :: OSI Approved :: ")],
        "record_sha256": hashlib.sha256(record.encode()).hexdigest() if record else "",
    })
debian = []
try:
    status = open("/var/lib/dpkg/status", encoding="utf-8").read()
except FileNotFoundError:
    status = ""
for paragraph in status.split("\n\n"):
    fields = {}
    for line in paragraph.splitlines():
        if line[:1] not in (" ", "\t") and ": " in line:
            key, value = line.split(": ", 1)
            fields[key] = value
    if fields.get("Status", "").endswith(" installed"):
        debian.append({k: fields.get(v, "") for k, v in
                       (("name", "Package"), ("version", "Version"), ("arch", "Architecture"))})
print(json.dumps({"python": python, "debian": debian}))
"""

# A License field longer than this is a license's text, not its name.
_SHORT_LICENSE = 80


async def inventory(image: dagger.Container) -> dict[str, Any]:
    """What is installed in ``image``: its venv's distributions and dpkg's packages."""
    out = await image.with_(compat.run([f"{VENV}/bin/python", "-c", _INVENTORY])).stdout()
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _licenses(dist: dict[str, Any]) -> list[Any]:
    from cyclonedx.contrib.license.factories import LicenseFactory

    factory = LicenseFactory()
    if dist["expression"]:
        return [factory.make_from_string(dist["expression"])]
    names = dist["classifiers"] or (
        [dist["license"]] if dist["license"] and len(dist["license"]) <= _SHORT_LICENSE else []
    )
    return [factory.make_from_string(name) for name in names]


def document(stamp: Stamp, digest: str, installed: dict[str, Any]) -> str:
    """The CycloneDX 1.6 JSON of one image, validated against the schema."""
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from packageurl import PackageURL

    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"pipeline:{stamp.service}@{digest}"))
    bom.metadata.timestamp = datetime.fromisoformat(stamp.created)
    bom.metadata.component = Component(
        name=stamp.service,
        version=stamp.version,
        type=ComponentType.CONTAINER,
        bom_ref=f"{stamp.service}@{digest}",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=digest.removeprefix("sha256:"))],
        properties=[Property(name="pipeline:tier", value=stamp.tier)],
    )
    for dist in sorted(installed["python"], key=lambda d: d["name"].lower()):
        purl = PackageURL("pypi", None, dist["name"].lower(), dist["version"])
        record = dist["record_sha256"]
        bom.components.add(
            Component(
                name=dist["name"],
                version=dist["version"],
                type=ComponentType.LIBRARY,
                purl=purl,
                bom_ref=purl.to_string(),
                licenses=_licenses(dist),
                # the installed files' own hashes, as the RECORD lists them: one digest of it
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=record)] if record else [],
                properties=[Property(name="pipeline:layer", value=f"venv {VENV}")],
            )
        )
    for pkg in sorted(installed["debian"], key=lambda p: p["name"]):
        purl = PackageURL("deb", "debian", pkg["name"], pkg["version"], {"arch": pkg["arch"]})
        bom.components.add(
            Component(
                name=pkg["name"],
                version=pkg["version"],
                type=ComponentType.APPLICATION,
                purl=purl,
                bom_ref=purl.to_string(),
            )
        )
    # the image holds every component directly: a flat, complete dependency graph
    bom.register_dependency(bom.metadata.component, list(bom.components))
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise ValueError(f"SBOM of {stamp.service} fails the CycloneDX 1.6 schema: {error}")
    return text
