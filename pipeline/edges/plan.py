"""``plan``: the tiers, the services and the files each uploads, without an engine.

A plan is replayed, not recomputed, while nothing it was made from has changed: loading the
config models costs more than the rest of the command (pydantic alone is ~0.15 s to import).
``.pipeline/plan.json`` names every file the loader read (the config, each manifest, each
requirement file) with a digest of its content (a missing file as missing), what each
services glob matched, and each service's include/exclude globs. A replay reads those small
files again, expands the globs again and walks every service folder again, so its uploads
are always today's. Anything else is a miss and the loader runs: another pipeline code, an
unreadable entry, a selection the entry cannot answer, a folder whose globs now match
nothing (the loader then says why).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core import globs, inputs
from pipeline.edges.git import ignored_paths
from pipeline.edges.resultcache import FOLDER, FORMAT, write_entry

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pipeline.core.model import Project, Service, Tier

ENTRY = "plan.json"
TIER_KEYS = ("name", "image", "extends", "requirements")
SERVICE_KEYS = ("name", "tier", "path", "port", "requirements", "workspace", "uploads", "ignored")


def data(project: Project, services: Sequence[Service]) -> dict[str, Any]:
    """The plan of ``services`` as plain data (what ``plan --json`` prints)."""
    return {
        "project": str(project.root),
        "config": str(project.config_file),
        "tiers": [
            {
                "name": t.name,
                "image": t.image_name,
                "extends": t.spec.extends,
                "requirements": _tier_requirements(t, project.root),
            }
            for t in project.tiers.values()
        ],
        "services": [_service(s, project.root) for s in services],
    }


def _tier_requirements(t: Tier, root: Path) -> list[str]:
    """A tier's requirement files, and its workspace group as the lock pins it."""
    named = [str(p.relative_to(root)) for p in t.requirements]
    if t.lock is not None:
        group = f" group {t.spec.group}" if t.spec.group else ""
        group += "".join(f", {p.relative_to(root)}" for p in t.members)
        libs = f", libraries {', '.join(lib.name for lib in t.libraries)}" if t.libraries else ""
        named.append(f"{t.lock.relative_to(root)}{group} ({len(t.pins)} pins{libs})")
    return named


def _service(s: Service, root: Path) -> dict[str, Any]:
    uploads = inputs.source_files(s, root)
    return {
        "name": s.name,
        "tier": s.tier,
        "path": str(s.path.relative_to(root)),
        "port": s.spec.port,
        "requirements": s.spec.requirements,
        "workspace": _workspace(s, root),
        "uploads": uploads,
        "ignored": left_out(s.path, s.spec.include, s.spec.exclude, s.ignored, uploads),
    }


def left_out(
    folder: Path,
    include: Sequence[str],
    exclude: Sequence[str],
    ignored: frozenset[str],
    uploads: Sequence[str],
) -> list[str]:
    """The files the globs select that git ignores, and so are not among ``uploads`` (the
    same globs' walk with ``ignored``)."""
    if not ignored:
        return []
    return sorted(set(inputs.walk(folder, folder, include, exclude)) - set(uploads))


def render(plan: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(plan, indent=2)
    lines = ["tiers:"]
    for t in plan["tiers"]:
        extends = f", extends {t['extends']}" if t["extends"] else ""
        lines.append(
            f"  {t['name']} (image {t['image']}{extends}): "
            f"{', '.join(t['requirements']) or 'no requirements'}"
        )
    lines.append("services:")
    for s in plan["services"]:
        uploads = s["uploads"]
        port = f", port {s['port']}" if s["port"] else ""
        lines.append(f"  {s['name']} [{s['tier']}{port}] {s['path']}: uploads {len(uploads)} files")
        if ws := s.get("workspace"):
            libraries = ", ".join(ws["libraries"]) or "none"
            itself = "; itself installed (its entry points)" if ws.get("installed") else ""
            lines.append(
                f"    uv workspace: {ws['lock']}, {ws['pins']} pins, libraries: {libraries}{itself}"
            )
        lines.extend(f"    {u}" for u in uploads)
        if s.get("ignored"):
            lines.append(f"    left out, as git ignores them: {', '.join(s['ignored'])}")
    return "\n".join(lines)


def _digest(path: Path) -> str | None:
    try:
        return inputs.file_digest(path)
    except OSError:
        return None


def _matches(root: Path, pattern: str) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.glob(pattern))


def _workspace(s: Service, root: Path) -> dict[str, Any] | None:
    """A uv workspace member's lock, the libraries it takes and how many pins."""
    used = s.workspace
    if used is None:
        return None
    return {
        "lock": used.lock.relative_to(root).as_posix(),
        "libraries": [lib.name for lib in used.libraries if lib.name != used.package],
        "pins": len(used.pins),
        "installed": any(lib.name == used.package for lib in used.libraries),
    }


def record(project: Project) -> dict[str, Any]:
    """Store the plan of every service of a project just loaded, with what it was read from,
    and return it. Never fails the command: a project folder that cannot be written is
    planned each time."""
    from pipeline.core.project import manifest_glob

    root = project.root
    files = {project.config_file, root / "pipeline.toml", root / "pyproject.toml"}
    files.update(project.test_requirements)
    for tier in project.tiers.values():
        files.update(tier.requirements)
        if tier.lock is not None:  # a workspace group's pins are read out of it
            files.update((tier.lock, tier.lock.parent / "pyproject.toml"))
    walks = {}
    for svc in project.services.values():
        files.add(svc.manifest)
        if svc.requirements is not None:
            files.add(svc.requirements)
        if svc.workspace is not None:  # what the plan shows of it is read from these
            files.add(svc.workspace.lock)
            files.add(svc.workspace.root / "pyproject.toml")
            files.update(lib.path / "pyproject.toml" for lib in svc.workspace.libraries)
        walks[svc.name] = [
            svc.path.relative_to(root).as_posix(),
            list(svc.spec.include),
            list(svc.spec.exclude),
        ]
    whole = data(project, list(project.services.values()))
    plan = {**whole, "config": os.path.relpath(project.config_file, root)}
    del plan["project"]
    entry = {
        "code": inputs.code_digest(),
        "files": {os.path.relpath(f, root): _digest(f) for f in sorted(files)},
        "globs": {g: _matches(root, g) for g in map(manifest_glob, project.spec.services)},
        "walks": walks,
        "plan": plan,
    }
    with contextlib.suppress(OSError):
        write_entry(root / FOLDER, root / FOLDER / ENTRY, entry)
    return whole


def of(plan: dict[str, Any], services: Sequence[Service]) -> dict[str, Any]:
    """The plan of these services only."""
    names = {s.name for s in services}
    return {**plan, "services": [s for s in plan["services"] if s["name"] in names]}


def _still_true(root: Path) -> dict[str, Any] | None:
    """The stored entry, when every file and glob it was made from is as it was."""
    stored = json.loads((root / FOLDER / ENTRY).read_text(encoding="utf-8"))
    entry: dict[str, Any] = stored["value"]
    unchanged = (
        stored["format"] == FORMAT
        and entry["code"] == inputs.code_digest()
        and all(_digest(root / f) == d for f, d in entry["files"].items())
        and all(_matches(root, g) == m for g, m in entry["globs"].items())
    )
    return entry if unchanged else None


def replay(
    root: Path, names: Sequence[str] = (), tiers: Sequence[str] = ()
) -> dict[str, Any] | None:
    """The plan of the selected services as the loader would give it, or None on any doubt
    (the loader then runs, and names what is wrong)."""
    root = root.resolve()
    try:
        entry = _still_true(root)
        if entry is None:
            return None
        plan = entry["plan"]
        ignored = ignored_paths(root)
        for svc in plan["services"]:
            folder, include, exclude = entry["walks"][svc["name"]]
            own = globs.ignored_below(ignored, folder)
            uploads = inputs.walk(root / folder, root, include, exclude, own)
            svc["uploads"] = uploads
            svc["ignored"] = left_out(root / folder, include, exclude, own, uploads)
        chosen = [
            s
            for s in plan["services"]
            if (not names or s["name"] in names) and (not tiers or s["tier"] in tiers)
        ]
        known = {s["name"] for s in plan["services"]}, {t["name"] for t in plan["tiers"]}
        complete = all(s["uploads"] for s in plan["services"])
        if not (chosen and complete and set(names) <= known[0] and set(tiers) <= known[1]):
            return None
        return {
            "project": str(root),
            "config": str(root / plan["config"]),
            "tiers": [{k: t[k] for k in TIER_KEYS} for t in plan["tiers"]],
            "services": [{k: s[k] for k in SERVICE_KEYS} for s in chosen],
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
