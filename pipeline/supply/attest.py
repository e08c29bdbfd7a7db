"""Where each image came from, as an in-toto Statement with a SLSA v1 provenance predicate:
the subject is the image by digest; the build definition names the service, its tier, the
config and the pipeline's version; the resolved dependencies are the commit, the base image
by digest and every requirement file by digest; the run details name the builder and when
the build started and finished. Dagger-free.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline.core.inputs import pipeline_version, sdk_version

if TYPE_CHECKING:
    from pipeline.core.jobs import Job
    from pipeline.core.model import Project

STATEMENT = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
MEDIA_TYPE = "application/vnd.in-toto+json"
BUILD_TYPE = "urn:pipeline:buildtype:service-image:v1"
# One id per run: every image of a run shares it.
RUN_ID = str(uuid.uuid4())


def _sha256(path: os.PathLike[str]) -> str:
    with open(path, "rb") as fh:  # noqa: PTH123 - any path-like
        return hashlib.sha256(fh.read()).hexdigest()


def builder_id() -> str:
    """The workflow on GitHub Actions; otherwise this host."""
    env = os.environ
    if env.get("GITHUB_WORKFLOW_REF"):
        return f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/{env['GITHUB_WORKFLOW_REF']}"
    return f"urn:pipeline:host:{socket.gethostname()}"


def _invocation() -> str:
    env = os.environ
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        attempt = env.get("GITHUB_RUN_ATTEMPT", "1")
        run = f"{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
        return f"{server}/{run}/attempts/{attempt}"
    return f"urn:uuid:{RUN_ID}"


def _time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def statement(
    project: Project,
    job: Job,
    name: str,
    digest: str,
    started: float,
    finished: float,
) -> dict[str, Any]:
    """The provenance of the image ``name@digest`` that ``job`` built."""
    stamp, service = job.stamp, job.service
    root_inputs = job.inputs
    while root_inputs.parent is not None:
        root_inputs = root_inputs.parent
    base_image = str(root_inputs.values.get("base_image", ""))
    root = project.root
    requirement_files = [p for t in project.chain(service.tier) for p in t.requirements]
    if service.requirements is not None:
        requirement_files.append(service.requirements)
    dependencies: list[dict[str, Any]] = []
    if stamp.revision != "unknown":
        commit: dict[str, Any] = {"name": "source", "digest": {"gitCommit": stamp.revision}}
        # Only a public source is named: a local-path remote would publish this machine's
        # checkout path, which says nothing to anyone else.
        if stamp.source:
            commit["uri"] = f"git+{stamp.source}"
        dependencies.append(commit)
    base_name, _, base_digest = base_image.partition("@")
    if base_digest:
        algorithm, _, value = base_digest.partition(":")
        dependencies.append({"uri": f"oci://{base_name}", "digest": {algorithm: value}})
    dependencies += [
        {"uri": f"file:{p.relative_to(root).as_posix()}", "digest": {"sha256": _sha256(p)}}
        for p in requirement_files
    ]
    algorithm, _, value = digest.partition(":")
    return {
        "_type": STATEMENT,
        "subject": [{"name": name, "digest": {algorithm: value}}],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "service": service.name,
                    "tier": service.tier,
                    "config": project.config_file.relative_to(root).as_posix(),
                    "version": stamp.version,
                    "dirty": stamp.dirty,
                },
                "internalParameters": {
                    "pipeline": pipeline_version(),
                    "configDigest": {"sha256": _sha256(project.config_file)},
                    "inputsKey": job.key,
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {
                    "id": builder_id(),
                    "version": {"pipeline": pipeline_version(), "dagger-io": sdk_version()},
                },
                "metadata": {
                    "invocationId": _invocation(),
                    "startedOn": _time(started),
                    "finishedOn": _time(finished),
                },
            },
        },
    }


def problem(doc: dict[str, Any], artifact: str, digest: str) -> str | None:
    """What is wrong with a provenance ``artifact`` that refers to the image ``digest``:
    None when it is an in-toto SLSA statement about that image."""
    named = [f"sha256:{s['digest'].get('sha256')}" for s in doc.get("subject", [])]
    if doc.get("_type") != STATEMENT or doc.get("predicateType") != SLSA_PROVENANCE:
        return f"provenance {artifact} is no SLSA v1 in-toto statement"
    if digest not in named:
        return f"provenance {artifact} is about {', '.join(named)}, not this image"
    return None


def describe(provenance: dict[str, Any]) -> list[str]:
    """What the provenance says: the service, who built it when, and from what."""
    predicate = provenance["predicate"]
    params = predicate["buildDefinition"]["externalParameters"]
    run = predicate["runDetails"]
    lines = [
        f"service  {params['service']} (tier {params['tier']}), version {params['version']}",
        (
            f"built by {run['builder']['id']}, {run['metadata']['startedOn']} to "
            f"{run['metadata']['finishedOn']} (pipeline {run['builder']['version']['pipeline']})"
        ),
        "from:",
    ]
    for dep in predicate["buildDefinition"]["resolvedDependencies"]:
        (algorithm, value), *_ = dep["digest"].items()
        # a commit with no public source (a local-path remote) is named, not located
        where = dep.get("uri") or f"({dep.get('name', 'unnamed')})"
        lines.append(f"  {where} {algorithm}:{value}")
    return lines
