"""Image size and rebuild time of the pipeline against the hand-kept-Dockerfile way, both
built by the same engine in the same run.

The peer does what a typical per-service Dockerfile does: one stage from the base image,
build-essential installed, the whole repository copied in, then every requirement of the
service's tier chain installed with pip (no cache volume), so compilers ship and a source
edit anywhere re-runs every install.

    eval "$(scripts/engine env)"; .venv/bin/python benchmarks/rebuild.py

Prints one line per measure with the ratio peer / pipeline (higher is better for us).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import anyio
import dagger
from dagger import dag

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import graph, runner  # noqa: E402
from pipeline.cli import resolve_settings  # noqa: E402
from pipeline.report import ImageFacts  # noqa: E402


def peer_image(project: graph.Project, service: graph.Service, base: str) -> dagger.Container:
    repo = dag.host().directory(str(project.root), exclude=["**/__pycache__", ".git"])
    reqs = [
        p.relative_to(project.root) for t in project.chain(service.tier) for p in t.requirements
    ]
    if service.requirements is not None:
        reqs.append(service.requirements.relative_to(project.root))
    ctr = (
        dag.container()
        .from_(base)
        .with_exec(
            ["sh", "-c", "apt-get update -qq && apt-get install -y -qq build-essential >/dev/null"]
        )
        .with_directory("/src", repo)
        .with_workdir("/src")
        .with_exec(["python3", "-m", "venv", "/opt/venv"])
    )
    pip = ["/opt/venv/bin/pip", "install", "-q", "--cert", "/etc/ssl/certs/ca-certificates.crt"]
    for req in reqs:
        # a pyproject.toml service is installed as a project, the way its Dockerfile would
        args = [str(req.parent)] if req.name == "pyproject.toml" else ["-r", str(req)]
        ctr = ctr.with_exec([*pip, *args])
    return ctr.with_default_args(list(service.spec.command))


async def build_peer(project: graph.Project, base: str, out: Path) -> dict[str, ImageFacts]:
    facts: dict[str, ImageFacts] = {}

    async def one(svc: graph.Service) -> None:
        target = out / f"peer-{svc.name}.tar"
        await peer_image(project, svc, base).export(str(target))
        facts[svc.name] = ImageFacts.from_tarball(target)

    async with anyio.create_task_group() as tg:
        for svc in project.services.values():
            tg.start_soon(one, svc)
    return facts


async def build_ours(project: graph.Project, base: str, out: Path) -> dict[str, ImageFacts]:
    settings = resolve_settings(project, base, "bench")
    options = runner.RunOptions(jobs=4, out_dir=out, test=False)
    results = await runner.run(project, list(project.services.values()), settings, options)
    bad = [r for r in results if not r.ok]
    if bad:
        raise SystemExit(f"pipeline build failed: {bad[0].service}: {bad[0].reason}")
    return {r.service: r.image for r in results if r.image is not None}


def stored(facts: dict[str, ImageFacts], sizes: dict[str, int]) -> int:
    """Bytes a registry stores: each distinct layer once."""
    return sum(sizes[d] for d in {d for f in facts.values() for d in f.layers})


def layer_sizes(out: Path) -> dict[str, int]:
    return {f"sha256:{p.name}": p.stat().st_size for p in out.rglob("blobs/sha256/*")}


async def main() -> None:
    base = os.environ.get("PIPELINE_BASE_IMAGE", "python:3.11-slim-bookworm")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(
            ROOT / "services", work / "repo/services", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copytree(ROOT / "requirements", work / "repo/requirements")
        shutil.copy(ROOT / "pipeline.toml", work / "repo/pipeline.toml")
        project = graph.load(work / "repo")
        async with dagger.connection(dagger.Config(log_output=None)):
            timings: dict[str, list[float]] = {"ours": [], "peer": []}
            facts = {}
            for round_ in ("first", "edit"):
                if round_ == "edit":
                    app = work / "repo/services/users/users/app.py"
                    app.write_text(app.read_text() + f"\n# edit {time.time_ns()}\n")
                for name, build in (("ours", build_ours), ("peer", build_peer)):
                    out = work / f"{name}-{round_}"
                    out.mkdir()
                    t0 = time.monotonic()
                    facts[name] = await build(project, base, out)
                    timings[name].append(time.monotonic() - t0)
            sizes: dict[str, dict[str, int]] = {}
            for name in ("ours", "peer"):
                out = work / f"{name}-edit"
                for tar in out.glob("*.tar"):
                    shutil.unpack_archive(tar, out / tar.stem, format="tar")
                sizes[name] = layer_sizes(out)
    total = {n: sum(f.size for f in facts[n].values()) for n in facts}
    unique = {n: stored(facts[n], sizes[n]) for n in facts}
    rows = [
        ("sum of image sizes (MB, compressed)", total["peer"] / 1e6, total["ours"] / 1e6),
        ("registry storage, distinct layers (MB)", unique["peer"] / 1e6, unique["ours"] / 1e6),
        ("first build of this run, caches as found (s)", timings["peer"][0], timings["ours"][0]),
        ("rebuild after a one-line source edit (s)", timings["peer"][1], timings["ours"][1]),
    ]
    print(f"{'measure':44} {'peer':>10} {'pipeline':>10} {'peer/pipeline':>14}")
    for label, peer, ours in rows:
        print(f"{label:44} {peer:10.1f} {ours:10.1f} {peer / ours:13.2f}x")


if __name__ == "__main__":
    anyio.run(main)
