"""What a run comes to: one Result per service, the facts of its image, and the kinds of
check, step and stored entry, each an enum. Pure data that knows how to serialise itself."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


class Check(enum.StrEnum):
    """The checks of an image, in the order a result lists them."""

    UNIT = "unit"  # the service's unit tests, in the builder
    SMOKE = "smoke"  # its smoke command, in the image
    HEALTH = "health"  # its health probe, in the image


class Step(enum.StrEnum):
    """The timed steps of one service's build (a Result's ``steps``)."""

    TIER = "tier"  # its tier image: built, or waited for while another service builds it
    IMAGE = "image"  # the service's own layers: dependencies, source, stamp
    EXPORT = "export"
    SBOM = "sbom"
    UNIT = "unit"
    SMOKE = "smoke"
    HEALTH = "health"


class Kind(enum.StrEnum):
    """The kinds of entry, each a folder of the scope."""

    RESULTS = "results"  # a service's whole verified result, by the key of all its inputs
    CHECKS = "checks"  # checks passed on an image of this content (its key less the stamp)
    INPUTS = "inputs"  # the inputs of a service's last build, to say why it rebuilds


class Store(Protocol):
    """Where outcomes are kept between runs (edges/resultcache.py is the local one)."""

    def get(self, kind: Kind, name: str) -> dict[str, Any] | None: ...

    def put(self, kind: Kind, name: str, value: dict[str, Any]) -> None: ...


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
    # the timeline: when the service's build began (epoch seconds; 0 for a replay), and each
    # step's start (seconds after that) and length
    started: float = 0.0
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    changed: tuple[str, ...] = ()  # why it was built: the inputs that changed since last time
    engine: str = ""  # the engine that built it (its version and where it runs)

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
            sbom=str(data.get("sbom", "")),
            attestation=str(data.get("attestation", "")),
            cached=bool(data.get("cached", False)),
            reused_checks=tuple(map(str, data.get("reused_checks", ()))),
            steps={str(k): float(v) for k, v in data.get("steps", {}).items()},
            started=float(data.get("started", 0.0)),
            spans={str(k): (float(v[0]), float(v[1])) for k, v in data.get("spans", {}).items()},
            changed=tuple(map(str, data.get("changed", ()))),
            engine=str(data.get("engine", "")),
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
        out["spans"] = {name: list(span) for name, span in self.spans.items()}
        out["changed"] = list(self.changed)
        return out

    @property
    def label(self) -> str:
        """The status as shown: ok, cached or failed."""
        return "cached" if self.cached and self.ok else self.status.value
