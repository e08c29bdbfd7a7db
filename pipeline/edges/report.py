"""Results of a run: one Result per service, and the ways they are shown."""

from __future__ import annotations

import enum
import hashlib
import json
import os
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class Status(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class ImageFacts:
    """What an exported OCI tarball says about its image."""

    # The manifest digest; for a tier (never exported on its own: its layers are the bottom
    # of each of its services' images) the digest of its chain of layer digests.
    digest: str
    size: int  # compressed bytes: config plus layers (a tier: its layers)
    layers: tuple[str, ...]  # layer digests, bottom first
    layer_sizes: tuple[int, ...] = ()  # compressed bytes of each layer, when known

    @classmethod
    def from_tarball(cls, path: Path) -> ImageFacts:
        with tarfile.open(path) as tar:

            def blob(digest: str) -> dict[str, Any]:
                member = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
                if member is None:
                    raise ValueError(f"{path}: blob {digest} missing")
                return json.loads(member.read())  # type: ignore[no-any-return]

            index_file = tar.extractfile("index.json")
            if index_file is None:
                raise ValueError(f"{path}: no index.json, not an OCI image layout")
            desc = json.loads(index_file.read())["manifests"][0]
            manifest = blob(desc["digest"])
            while "manifests" in manifest:  # an index: follow to the first image manifest
                desc = manifest["manifests"][0]
                manifest = blob(desc["digest"])
        layers = tuple(layer["digest"] for layer in manifest["layers"])
        sizes = tuple(int(layer["size"]) for layer in manifest["layers"])
        return cls(desc["digest"], manifest["config"]["size"] + sum(sizes), layers, sizes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageFacts:
        return cls(
            str(data["digest"]),
            int(data["size"]),
            tuple(map(str, data["layers"])),
            tuple(map(int, data.get("layer_sizes", ()))),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "size": self.size,
            "layers": list(self.layers),
            "layer_sizes": list(self.layer_sizes),
        }

    def bottom(self, count: int) -> ImageFacts:
        """The facts of the image made of this image's ``count`` bottom layers."""
        if not 0 < count <= len(self.layers) or len(self.layer_sizes) != len(self.layers):
            raise ValueError(f"no {count} bottom layers with sizes in {self.digest}")
        chain = hashlib.sha256(" ".join(self.layers[:count]).encode()).hexdigest()
        sizes = self.layer_sizes[:count]
        return ImageFacts(f"sha256:{chain}", sum(sizes), self.layers[:count], sizes)


@dataclass(frozen=True)
class Result:
    service: str
    tier: str
    status: Status
    duration: float
    image: ImageFacts | None = None
    tests: dict[str, bool] = field(default_factory=dict)
    reason: str = ""
    tarball: str = ""
    sbom: str = ""  # the CycloneDX SBOM beside the tarball
    attestation: str = ""  # the provenance artifact in the registry, by digest
    published: tuple[str, ...] = ()  # references with digest, one per tag
    tier_image: ImageFacts | None = None  # the tier image the service starts from
    cached: bool = False  # replayed from the result cache: no engine work this run
    # checks not run this run because they passed on an image of identical content
    reused_checks: tuple[str, ...] = ()
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step (image, unit, ...)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        def facts(key: str) -> ImageFacts | None:
            return ImageFacts.from_dict(data[key]) if data.get(key) else None

        return cls(
            service=str(data["service"]),
            tier=str(data["tier"]),
            status=Status(data["status"]),
            duration=float(data["duration"]),
            image=facts("image"),
            tests={str(k): bool(v) for k, v in data.get("tests", {}).items()},
            reason=str(data.get("reason", "")),
            tarball=str(data.get("tarball", "")),
            published=tuple(data.get("published", ())),
            tier_image=facts("tier_image"),
        )

    @property
    def own_size(self) -> int | None:
        """Compressed bytes the service adds on top of its tier image."""
        if self.image is None or self.tier_image is None:
            return None
        return self.image.size - self.tier_image.size

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        out["duration"] = round(self.duration, 2)
        for key in ("image", "tier_image"):
            if out[key] is not None:
                out[key]["layers"] = list(out[key]["layers"])
                out[key]["layer_sizes"] = list(out[key]["layer_sizes"])
        out["own_size"] = self.own_size
        out["published"] = list(self.published)
        out["reused_checks"] = list(self.reused_checks)
        return out

    @property
    def label(self) -> str:
        """The status as shown: ok, cached or failed."""
        return "cached" if self.cached and self.ok else self.status.value


KB, MB = 1e3, 1e6


def _mb(size: int) -> str:
    return f"{size / MB:.1f} MB" if abs(size) >= MB / 10 else f"{size / KB:.1f} kB"


def table(results: list[Result]) -> str:
    rows = [("SERVICE", "TIER", "STATUS", "TIME", "SIZE", "OWN", "LAYERS", "DIGEST / REASON")]
    for r in results:
        img = r.image
        rows.append(
            (
                r.service,
                r.tier,
                r.label,
                f"{r.duration:.1f}s",
                _mb(img.size) if img else "-",
                _mb(r.own_size) if r.own_size is not None else "-",
                str(len(img.layers)) if img else "-",
                (img.digest[:19] if img and r.ok else r.reason.splitlines()[0] if r.reason else ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    ]
    tiers = {r.tier: r.tier_image for r in results if r.tier_image is not None}
    if tiers:
        lines.append("tier images: " + ", ".join(f"{t} {_mb(f.size)}" for t, f in tiers.items()))
    failed = sum(not r.ok for r in results)
    cached = sum(r.cached and r.ok for r in results)
    replayed = f" ({cached} from the result cache)" if cached else ""
    lines.append(f"{len(results) - failed} built{replayed}, {failed} failed")
    return "\n".join(lines)


def markdown(results: list[Result]) -> str:
    lines = ["| service | tier | status | time | size | tests |", "|---|---|---|---|---|---|"]
    for r in results:
        tests = ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in r.tests.items()) or "-"
        size = _mb(r.image.size) if r.image else "-"
        status = r.label if r.ok else f"failed: {r.reason.splitlines()[0] if r.reason else ''}"
        lines.append(
            f"| {r.service} | {r.tier} | {status} | {r.duration:.1f}s | {size} | {tests} |"
        )
    return "\n".join(lines) + "\n"


def write_json(results: list[Result], path: Path, extra: dict[str, Any]) -> None:
    """The report, written whole under a unique name beside ``path``, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({**extra, "services": [r.as_dict() for r in results]}, indent=2) + "\n"
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}-", delete=False, encoding="utf-8"
    ) as fh:
        fh.write(text)
    tmp = Path(fh.name)
    tmp.chmod(0o644)
    tmp.replace(path)


def write_step_summary(results: list[Result]) -> None:
    """Append the Markdown table to the GitHub Actions step summary when there is one."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with Path(target).open("a", encoding="utf-8") as fh:
            fh.write("### Images\n\n" + markdown(results))


def log_line(result: Result) -> None:
    """One canonical line per service, with all its figures."""
    from pipeline.core.log import get_logger

    facts = result.image
    figures = {
        "service": result.service,
        "tier": result.tier,
        "status": result.label,
        "duration": round(result.duration, 2),
        "digest": facts.digest if facts else None,
        "size": facts.size if facts else None,
        "layers": len(facts.layers) if facts else None,
        "tests": result.tests,
        "reused_checks": list(result.reused_checks),
        "steps": result.steps,
    }
    if result.ok:
        get_logger().info("service_built", **figures, published=list(result.published))
    else:
        get_logger().error("service_failed", **figures, reason=result.reason)
