"""What each selected service needs this run, decided before any engine work: its inputs and
stamp, its cache keys, the checks already passed on identical content, or a whole result to
replay. Dagger-free: a run whose results all replay never loads the engine's SDK.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pipeline.core.inputs import Inputs, service_inputs, tier_inputs, would_read
from pipeline.core.log import get_logger
from pipeline.core.outcomes import Check, Kind, Result

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pipeline.core.model import Project, Service
    from pipeline.core.outcomes import Store
    from pipeline.core.settings import BuildSettings, RunOptions
    from pipeline.core.stamp import Stamp


@dataclass(frozen=True)
class Job:
    service: Service
    inputs: Inputs
    stamp: Stamp
    content_key: str  # everything the image is made of but its stamp: what checks depend on
    key: str  # content and stamp: equal keys, equal images
    passed: frozenset[str] = frozenset()  # checks that passed on an image of this content
    # the digest a stored result of this very key names, if any: what this build must equal
    recorded: str | None = None


def _key(*parts: Any) -> str:  # noqa: ANN401 - any JSON value
    encoded = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


def plan(
    project: Project,
    services: Sequence[Service],
    settings: BuildSettings,
    base_digest: str,
    cache: Store,
) -> list[Job]:
    """Each service's job: its inputs, stamp and keys, and what ``cache`` holds of them."""
    return [settle(job, cache) for job in draft(project, services, settings, base_digest)]


def draft(
    project: Project, services: Sequence[Service], settings: BuildSettings, base_digest: str
) -> list[Job]:
    """Each service's job before any store is read: its inputs, stamp and keys (what a
    store is asked for: ``wanted``)."""
    tiers = tier_inputs(project, settings, base_digest)
    made_of = {svc.name: service_inputs(project, svc, tiers[svc.tier]) for svc in services}
    reads = {svc.name: would_read(svc, project.root) for svc in services}
    changes = settings.provenance.last_changes(
        {
            svc.name: ([*made_of[svc.name].paths, *_settings_files(project, svc)], reads[svc.name])
            for svc in services
        }
    )
    out = []
    for svc in services:
        inputs = made_of[svc.name]
        stamp = settings.provenance.stamp(
            svc.name, svc.tier, inputs.paths, reads[svc.name], changes.get(svc.name)
        )
        content = inputs.key()
        out.append(Job(svc, inputs, stamp, content, _key(content, stamp.identity())))
    return out


def settle(job: Job, cache: Store) -> Job:
    """The job with what ``cache`` holds of it: the checks passed on its content, and the
    digest a stored result of its key names."""
    entry = cache.get(Kind.CHECKS, job.content_key) or {}
    passed = frozenset(k for k in Check if entry.get(k) is True)
    stored = cache.get(Kind.RESULTS, job.key) or {}
    recorded = (stored.get("image") or {}).get("digest") if passed else None
    return replace(job, passed=passed, recorded=recorded)


def _settings_files(project: Project, service: Service) -> list[str]:
    """The files a service's settings are read from: the config and its manifest."""
    files = {project.config_file, service.manifest}
    return sorted(
        f.relative_to(project.root).as_posix() for f in files if f.is_relative_to(project.root)
    )


def untested(key: str) -> str:
    """Where a result stored by a run without checks is kept: it serves only such runs."""
    return f"{key}-untested"


def wanted(job: Job) -> list[tuple[Kind, str]]:
    """The entries planning and replaying this job read: its checks, its whole result."""
    return [
        (Kind.CHECKS, job.content_key),
        (Kind.RESULTS, job.key),
        (Kind.RESULTS, untested(job.key)),
    ]


def replay(job: Job, cache: Store, options: RunOptions) -> Result | None:
    """The stored result of an identical build, when this run needs nothing more of it: no
    tarball to write, nothing to publish, and every check it asks for already passed."""
    if options.out_dir is not None or options.publish_to is not None:
        return None
    # A result stored by a run without checks serves only runs without checks.
    entry = cache.get(Kind.RESULTS, job.key) or (
        None if options.test else cache.get(Kind.RESULTS, untested(job.key))
    )
    if entry is None:
        _explain(job, cache)
        return None
    try:
        stored = Result.from_dict(entry)
    except (KeyError, TypeError, ValueError) as exc:
        get_logger().warning("cache_entry_ignored", service=job.service.name, reason=str(exc))
        return None
    why = _unfit(job, stored, options.test)
    if why:
        get_logger().warning("cache_entry_ignored", service=job.service.name, reason=why)
        return None
    # a replay does no work this run: no timeline, no engine
    return replace(
        stored,
        duration=0.0,
        cached=True,
        tarball="",
        sbom="",
        attestation="",
        published=(),
        reused_checks=(),
        steps={},
        started=0.0,
        spans={},
        changed=(),
        engine="",
    )


_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def _unfit(job: Job, stored: Result, tested: bool) -> str:
    """Why a stored result cannot stand for this job's build ("" when it can): it must be
    this service's, verified, of an image named by a digest, with every check this run asks
    for passed."""
    if stored.service != job.service.name or stored.tier != job.service.tier:
        return f"it is the result of {stored.service} ({stored.tier})"
    if not stored.ok or stored.image is None or not _DIGEST.match(stored.image.digest):
        return "it holds no verified image digest"
    failed = [c for c in expected_checks(job) if stored.tests.get(c) is not True]
    if tested and failed:
        return f"its checks did not all pass ({', '.join(failed)})"
    return ""


def expected_checks(job: Job) -> list[Check]:
    spec = job.service.spec
    wanted = {
        Check.UNIT: bool(spec.tests),
        Check.SMOKE: bool(spec.smoke),
        Check.HEALTH: spec.probe is not None,
    }
    return [check for check in Check if wanted[check]]


def record(job: Job, result: Result, cache: Store, tested: bool) -> None:
    """Store what this build proved: passed checks by content, a whole verified result by key."""
    passed = {name: True for name, ok in result.tests.items() if ok}
    if passed:
        cache.put(Kind.CHECKS, job.content_key, {**dict.fromkeys(job.passed, True), **passed})
    if result.ok and result.image is not None:
        data = replace(result, tarball="", published=()).as_dict()
        data["stored_at"] = time.time()
        complete = tested or not expected_checks(job)
        cache.put(Kind.RESULTS, job.key if complete else untested(job.key), data)
    cache.put(Kind.INPUTS, job.service.name, _inputs_dict(job.inputs))


def _inputs_dict(inputs: Inputs) -> dict[str, Any]:
    return {
        "name": inputs.name,
        "files": inputs.files,
        "values": inputs.values,
        "parent": _inputs_dict(inputs.parent) if inputs.parent else None,
    }


def _inputs_from(data: dict[str, Any] | None) -> Inputs | None:
    if not data:
        return None
    return Inputs(data["name"], data["files"], data["values"], _inputs_from(data.get("parent")))


def changes(job: Job, cache: Store) -> list[str]:
    """Which inputs changed since the service's last build (read before this run records)."""
    try:
        before = _inputs_from(cache.get(Kind.INPUTS, job.service.name))
    except (KeyError, TypeError):
        before = None
    changed = job.inputs.changes(before)
    if changed:
        return changed
    if job.recorded:  # an identical build is stored: only a run that must write or push redoes it
        return ["(nothing changed: the image is built again to be written or pushed)"]
    return ["(stamp: commit, branch or dirty state)"]


def _explain(job: Job, cache: Store) -> None:
    """Say which inputs changed since the service's last build."""
    changed = changes(job, cache)
    get_logger().info("rebuild_needed", service=job.service.name, changed=changed[:10])
