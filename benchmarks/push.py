"""How `publish` sends an image's layers, against skopeo: wall time and the sending process's
peak memory, for one image of one big layer (an ML tier's) of each size.

For each size (``--sizes`` in MiB, default 64 512 1024) the script writes an OCI layout
tarball as the engine exports one: a layer of random bytes (incompressible, as a compressed
layer is), its config, its manifest. Then, ``--runs`` times each, interleaved and each on a
quiet machine (``machine.settle``), both sides push it to a new repository of the loopback
registry (``$PIPELINE_REGISTRY``):

- the pipeline: a process that runs ``publish.upload``, what ``publish`` runs for each image
  (each blob checked against its digest and sent unless the repository has it; a blob another
  repository of the run holds is mounted, which a lone image never has);
- skopeo: ``skopeo copy oci-archive:TARBALL docker://REGISTRY/REPO`` (containers/image's
  copy, which streams each blob).

Each side's peak memory is its process's maximum resident set (``os.wait4``). Every push
goes to a new repository and sends the layer's bytes: skopeo's blob info cache, which would
have it mount the layer from the repository of an earlier run (0.8 s for 1 GiB instead of
several), is emptied before each of its runs; the pipeline's record of where a blob went
lasts one run.

    eval "$(scripts/engine env)"
    .venv/bin/python benchmarks/push.py                 # 64 512 1024 MiB, 3 runs
    .venv/bin/python benchmarks/push.py --sizes 256 --runs 5
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

from machine import settle  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 1 << 22
UPLOAD = """
import sys
from pathlib import Path
from pipeline.edges import publish, referrers
host, path, tarball = sys.argv[1:]
publish.upload(referrers.Client(host), path, Path(tarball), publish.Uploads())
"""


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layout(tarball: Path, mib: int) -> None:
    """A one-layer OCI layout tarball whose layer is ``mib`` MiB of random bytes."""
    raw = tarball.with_suffix(".layer")
    hashed = hashlib.sha256()
    with raw.open("wb") as out:
        for _ in range(mib * (1 << 20) // CHUNK):
            chunk = os.urandom(CHUNK)
            hashed.update(chunk)
            out.write(chunk)
    layer = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": "sha256:" + hashed.hexdigest(),
        "size": raw.stat().st_size,
    }
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _sha(config),
                "size": len(config),
            },
            "layers": [layer],
        }
    ).encode()
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": _sha(manifest),
        "size": len(manifest),
    }
    index = json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()
    with tarfile.open(tarball, "w") as tar:
        for name, data in (
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", index),
            (f"blobs/sha256/{_sha(config)[7:]}", config),
            (f"blobs/sha256/{_sha(manifest)[7:]}", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(raw, f"blobs/sha256/{hashed.hexdigest()}")
    raw.unlink()


# containers/image's record of which repositories hold a blob: root's, then a user's
BLOB_INFO_CACHES = (
    Path("/var/lib/containers/cache"),
    Path.home() / ".local/share/containers/cache",
)


def forget_blob_locations() -> None:
    for folder in BLOB_INFO_CACHES:
        for cache in folder.glob("blob-info-cache-v1.*"):
            cache.unlink()


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one process."""
    started = time.monotonic()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    took = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        said = child.stderr.read().decode() if child.stderr else ""
        raise SystemExit(f"{argv[0]} failed: {said}")
    return took, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512, 1024])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    registry = os.environ.get("PIPELINE_REGISTRY")
    if not registry or not shutil.which("skopeo"):
        print('needs $PIPELINE_REGISTRY (eval "$(scripts/engine env)") and skopeo on PATH')
        return 2
    host, namespace = [*registry.split("/", 1), "bench"][:2]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="push-bench-") as tmp:
        for mib in args.sizes:
            tarball = Path(tmp) / f"image-{mib}.tar"
            layout(tarball, mib)
            seen: dict[str, list[tuple[float, float]]] = {"pipeline": [], "skopeo": []}
            for run in range(args.runs):
                sides = ["pipeline", "skopeo"] if run % 2 == 0 else ["skopeo", "pipeline"]
                for side in sides:
                    path = f"{namespace}/push-bench-{uuid.uuid4().hex[:10]}"
                    argv = [sys.executable, "-c", UPLOAD, host, path, str(tarball)]
                    if side == "skopeo":
                        source, dest = f"oci-archive:{tarball}", f"docker://{host}/{path}:bench"
                        argv = ["skopeo", "copy", "-q", "--dest-tls-verify=false", source, dest]
                    if side == "skopeo":
                        forget_blob_locations()
                    settle()
                    seen[side].append(timed(argv, env))
                    took, peak = seen[side][-1]
                    print(f"{mib:5} MiB run {run + 1} {side:8} {took:6.2f} s {peak:7.1f} MiB")
            tarball.unlink()
            med = {s: [statistics.median(v[i] for v in seen[s]) for i in (0, 1)] for s in seen}
            rows.append((mib, med))
    print(f"\nMedians of {args.runs} run(s); ratio = pipeline / skopeo.\n")
    print("| layer | skopeo | pipeline | time ratio | skopeo peak | pipeline peak | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for mib, med in rows:
        (st, sm), (pt, pm) = med["skopeo"], med["pipeline"]
        print(
            f"| {mib} MiB | {st:.2f} s | {pt:.2f} s | {pt / st:.2f}x "
            f"| {sm:.0f} MiB | {pm:.0f} MiB | {pm / sm:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
