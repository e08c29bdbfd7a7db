"""A release of many services' moving tags on a far registry: `publish`'s release against
crane, the wall time of moving every service's two moving tags to its tested image.

For each count of services (``--services``, default 5 50 200), ``--runs`` times each,
interleaved and each on a quiet machine (``machine.settle``), both sides move the tags
``branch-main`` and ``latest`` of every service from the image of the last release to this
one's, the case of every CI run after the first. Each side gets repositories of its own on the
loopback registry (``$PIPELINE_REGISTRY``), made first and not timed: in each, the last
release's image under both moving tags and this release's image under its commit tag, as a
publish leaves them before its release.

Both sides talk to the registry through a proxy that answers every request ``--latency``
seconds late (default 0.05: a registry a continent away), as a registry in the cloud does for a
CI runner: a release is round trips, and on the loopback registry both take a few
milliseconds each.

- the pipeline: ``publish.release``, what ``publish`` runs once every image has passed and been
  pushed (the reads of where each tag points, then the moves, of the tags that exist first;
  all or nothing: a failure puts back every tag it moved), given the tested manifests as the
  run pushed them. Timed in the process, as a run pays it;
- crane: ``crane tag REPO@DIGEST TAG`` for each tag, eight at once (``xargs -P 8``, the
  pipeline's width), what a release script written by hand runs (each tag read and written;
  a failure leaves the tags moved before it). Timed around ``xargs``: its processes are what
  that script pays. crane comes from go-containerregistry, built on first use with ``go
  install`` into ``~/.cache/pipeline-peer/bin``.

After each side's release every tag is read back through the loopback registry: all must
point at this release's image. The requests each side sent are counted at the proxy.

    eval "$(scripts/engine env)"
    .venv/bin/python benchmarks/release.py                      # 5 50 200 services, 3 runs
    .venv/bin/python benchmarks/release.py --services 20 --latency 0.02 --runs 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from functools import partial
from pathlib import Path

import anyio
from machine import settle  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from pipeline.edges import publish, referrers, registry  # noqa: E402 - after the project's root is on the path
from tests.faultyregistry import Fault, FaultyRegistry  # noqa: E402

CRANE = "github.com/google/go-containerregistry/cmd/crane@v0.22.1"
CRANE_BIN = Path.home() / ".cache/pipeline-peer/bin"
TAGS = ("branch-main", "latest")
WIDTH = registry.REQUESTS_AT_ONCE
METHODS = ("GET", "HEAD", "PUT", "POST", "PATCH", "DELETE")


def crane() -> str:
    """crane's path, built with ``go install`` the first time."""
    found = shutil.which("crane") or (CRANE_BIN / "crane")
    if Path(found).exists():
        return str(found)
    print(f"building crane: go install {CRANE}")
    env = {**os.environ, "GOBIN": str(CRANE_BIN)}
    subprocess.run(["go", "install", CRANE], check=True, env=env)
    return str(CRANE_BIN / "crane")


def _image(client: referrers.Client, repository: str, mark: str) -> publish.Manifest:
    """A small image in ``repository`` (its one layer names ``mark``): its manifest's bytes,
    media type and digest."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    layer = hashlib.sha256(mark.encode()).hexdigest().encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": referrers.MANIFEST,
        "config": client.push_blob(repository, config, "application/vnd.oci.image.config.v1+json"),
        "layers": [client.push_blob(repository, layer, "application/vnd.oci.image.layer.v1.tar")],
    }
    body = json.dumps(manifest).encode()
    tag = hashlib.sha256(body).hexdigest()[:12]
    return body, referrers.MANIFEST, client.put_manifest(repository, tag, body, referrers.MANIFEST)


Pushed = dict[tuple[str, str], publish.Manifest]


def repositories(
    client: referrers.Client, namespace: str, count: int
) -> tuple[list[publish.Move], Pushed]:
    """``count`` services' repositories as a publish leaves them before its release: the moves
    of that release, and the tested manifests as the publish pushed them."""
    moves, pushed = [], {}
    for i in range(count):
        repository = f"{namespace}/service{i}"
        body, media_type, _ = _image(client, repository, f"{repository} last")
        for tag in TAGS:
            client.put_manifest(repository, tag, body, media_type)
        tested = _image(client, repository, f"{repository} tested")
        pushed[repository, tested[2]] = tested
        moves += [publish.Move(repository, tag, tested[2]) for tag in TAGS]
    return moves, pushed


def pipeline_release(proxy: str, moves: list[publish.Move], pushed: Pushed) -> float:
    client = referrers.Client(proxy)
    started = time.monotonic()
    # in a worker thread of an event loop, as ``publish`` runs it
    release = partial(publish.release, client, moves, pushed)
    made, reason, _ = anyio.run(anyio.to_thread.run_sync, release)
    took = time.monotonic() - started
    if reason or len(made) != len(moves):
        raise SystemExit(f"the pipeline's release failed: {reason}")
    return took


def crane_release(program: str, proxy: str, moves: list[publish.Move]) -> float:
    lines = "".join(f"{proxy}/{m.repository}@{m.digest} {m.tag}\n" for m in moves)
    argv = ["xargs", "-P", str(WIDTH), "-n", "2", program, "tag"]
    started = time.monotonic()
    done = subprocess.run(argv, input=lines, text=True, capture_output=True, check=False)
    took = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"crane's release failed: {done.stderr[-2000:]}")
    return took


def check(client: referrers.Client, moves: list[publish.Move]) -> None:
    for m in moves:
        _, _, digest = client.manifest(m.repository, m.tag)
        if digest != m.digest:
            raise SystemExit(f"{m.repository}:{m.tag} points at {digest}, not {m.digest}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, nargs="+", default=[5, 50, 200])
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    registry = os.environ.get("PIPELINE_REGISTRY")
    if not registry:
        print('needs $PIPELINE_REGISTRY (eval "$(scripts/engine env)")')
        return 2
    host, namespace = [*registry.split("/", 1), "bench"][:2]
    program = crane()
    direct = referrers.Client(host)
    late = [Fault(m, ".", action="late", delay=args.latency) for m in METHODS]
    rows = []
    with FaultyRegistry(host, faults=late) as proxy:
        for count in args.services:
            seen: dict[str, list[float]] = {"pipeline": [], "crane": []}
            sent: dict[str, list[int]] = {"pipeline": [], "crane": []}
            for run in range(args.runs):
                sides = ["pipeline", "crane"] if run % 2 == 0 else ["crane", "pipeline"]
                for side in sides:
                    moves, pushed = repositories(
                        direct, f"{namespace}/release-{uuid.uuid4().hex[:10]}", count
                    )
                    settle()
                    before = len(proxy.log)
                    if side == "pipeline":
                        took = pipeline_release(proxy.address, moves, pushed)
                    else:
                        took = crane_release(program, proxy.address, moves)
                    check(direct, moves)
                    seen[side].append(took)
                    sent[side].append(len(proxy.log) - before)
                    print(
                        f"{count:4} services run {run + 1} {side:8} {took:7.2f} s "
                        f"{sent[side][-1]:5} requests"
                    )
            rows.append((count, {s: (statistics.median(seen[s]), max(sent[s])) for s in seen}))
    print(
        f"\nMedians of {args.runs} run(s), every request answered {args.latency * 1000:.0f} ms "
        "late; ratio = pipeline / crane.\n"
    )
    print("| services (tags) | crane | pipeline | ratio | requests (crane / pipeline) |")
    print("|---|---|---|---|---|")
    for count, med in rows:
        (ct, cr), (pt, pr) = med["crane"], med["pipeline"]
        print(f"| {count} ({2 * count}) | {ct:.2f} s | {pt:.2f} s | {pt / ct:.2f}x | {cr} / {pr} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
