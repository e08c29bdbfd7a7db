"""A CycloneDX SBOM of each image, made from what is really installed in it: every Python
distribution in its venv (read by the image's own Python with importlib.metadata) and every
Debian package dpkg records as installed. The document is built and checked against the
CycloneDX 1.6 schema with cyclonedx-python-lib.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipeline.core.workspace import normalise

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pipeline.core.stamp import Stamp

VENV = "/opt/venv"  # where every image holds its Python distributions

MEDIA_TYPE = "application/vnd.cyclonedx+json"

# A License field longer than this is a license's text, not its name.
_SHORT_LICENSE = 80


def _licenses(dist: dict[str, Any]) -> list[Any]:
    from cyclonedx.contrib.license.factories import LicenseFactory

    factory = LicenseFactory()
    if dist["expression"]:
        return [factory.make_from_string(dist["expression"])]
    names = dist["classifiers"] or (
        [dist["license"]] if dist["license"] and len(dist["license"]) <= _SHORT_LICENSE else []
    )
    return [factory.make_from_string(name) for name in names]


def document(
    stamp: Stamp,
    digest: str,
    installed: dict[str, Any],
    workspace: Mapping[str, str] | None = None,
) -> str:
    """The CycloneDX 1.6 JSON of one image, validated against the schema. ``workspace`` names
    the packages built from the monorepo's own uv workspace (name -> folder): they are the
    commit's, not an index's, and say so (a generic purl with the repository and commit, and
    their folder)."""
    members = {normalise(name): folder for name, folder in (workspace or {}).items()}
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
        folder = members.get(normalise(dist["name"]))
        properties = [Property(name="pipeline:layer", value=f"venv {VENV}")]
        if folder is None:
            purl = PackageURL("pypi", None, dist["name"].lower(), dist["version"])
        else:
            vcs = f"git+{stamp.source}@{stamp.revision}" if stamp.source else stamp.revision
            purl = PackageURL(
                "generic", None, normalise(dist["name"]), dist["version"], {"vcs_url": vcs}
            )
            properties += [
                Property(name="pipeline:workspace-member", value=folder),
                Property(name="pipeline:revision", value=stamp.revision),
            ]
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
                properties=properties,
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


def problem(doc: dict[str, Any], artifact: str, digest: str) -> str | None:
    """What is wrong with an SBOM ``artifact`` that refers to the image ``digest``: None when
    it describes that image."""
    hashes = doc.get("metadata", {}).get("component", {}).get("hashes", [])
    if not any(f"sha256:{h.get('content')}" == digest for h in hashes):
        return f"SBOM {artifact} describes another image"
    return None


def describe(bom: dict[str, Any]) -> list[str]:
    """What the SBOM says the image holds."""
    components = bom.get("components", [])
    python = sorted(f"{c['name']} {c['version']}" for c in components if "pkg:pypi/" in c["purl"])
    debian = [c for c in components if "pkg:deb/" in c["purl"]]
    return [
        f"contains: {len(python)} Python distributions, {len(debian)} Debian packages",
        f"  python: {', '.join(python)}",
    ]
