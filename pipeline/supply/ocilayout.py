"""An exported image (an OCI layout in a tarball) made to say when it was made by its commit,
not by the engine: the config's ``created`` and each history entry's ``created`` set to the
image's stamp time, so the same inputs give the same manifest digest on any engine, of either
Dagger generation, warm or cold. (The engines stamp each layer's history with the time their
cache record was made; neither lets a client set the source date epoch.)

Layers are never touched: only the config, the manifest naming it and index.json change.
Dagger-free and stdlib-only.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

BLOBS = "blobs/sha256/"
_CHUNK = 1 << 20  # bytes read at a time from a blob


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _member(digest: str) -> str:
    return BLOBS + digest.removeprefix("sha256:")


def _json(data: bytes) -> dict[str, Any]:
    return json.loads(data)  # type: ignore[no-any-return]


def _canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=False).encode()


@dataclass(frozen=True)
class Image:
    """The one image of a layout: its manifest (bytes and descriptor) and config."""

    manifest: bytes
    media_type: str
    config: bytes
    layers: tuple[dict[str, Any], ...]

    @property
    def digest(self) -> str:
        return _digest(self.manifest)


def _open(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    member = tar.extractfile(name)
    if member is None:
        raise ValueError(f"{name} is missing from the image's layout")
    return member


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    return _open(tar, name).read()


def read(tarball: Path | bytes) -> Image:
    """The image a layout tarball holds (the first manifest, through an index if any): a
    file, or a tarball's bytes."""
    source = {"fileobj": io.BytesIO(tarball)} if isinstance(tarball, bytes) else {"name": tarball}
    with tarfile.open(**source) as tar:
        desc = _json(_read(tar, "index.json"))["manifests"][0]
        manifest = _read(tar, _member(desc["digest"]))
        while "manifests" in _json(manifest):  # an index: its first image
            desc = _json(manifest)["manifests"][0]
            manifest = _read(tar, _member(desc["digest"]))
        data = _json(manifest)
        config = _read(tar, _member(data["config"]["digest"]))
        media_type = str(data.get("mediaType") or desc.get("mediaType"))
        return Image(manifest, media_type, config, tuple(data["layers"]))


def dated(config: bytes, created: str) -> bytes:
    """The config with ``created`` as its creation time and every history entry's, and no
    engine's words in its history: each generation describes a step its own way ("copy / /"
    or "pulled from <ref>" on v0.11, "Directory.withDirectory" on v0.21), which would make the
    digest the engine's. Both fields are optional in the OCI image spec."""
    data = _json(config)
    data["created"] = created
    for entry in data.get("history") or []:
        entry["created"] = created
        entry.pop("created_by", None)
        entry.pop("comment", None)
    return _canonical(data)


def restamped(image: Image, created: str) -> Image:
    """The image as it says ``created`` (``dated``): a new config, and a manifest naming it."""
    config = dated(image.config, created)
    if config == image.config:
        return image
    manifest_data = _json(image.manifest)
    manifest_data["config"] = {
        **manifest_data["config"],
        "digest": _digest(config),
        "size": len(config),
    }
    return Image(_canonical(manifest_data), image.media_type, config, image.layers)


def normalize(tarball: Path, created: str) -> Image:
    """Rewrite the layout in place so its image says ``created``; returns the image."""
    image = read(tarball)
    new = restamped(image, created)
    if new is image:
        return image
    config, manifest = new.config, new.manifest
    index = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": image.media_type, "digest": _digest(manifest), "size": len(manifest)}
            ],
        }
    )
    layers = {_member(layer["digest"]) for layer in image.layers}
    fd, tmp = tempfile.mkstemp(dir=tarball.parent, prefix=f".{tarball.name}-", suffix=".tmp")
    os.close(fd)
    try:
        with tarfile.open(tarball) as source, tarfile.open(tmp, "w") as out:
            for member in source:
                if member.isdir() or member.name in layers or member.name == "oci-layout":
                    out.addfile(member, source.extractfile(member))
            for name, data in (
                (_member(_digest(config)), config),
                (_member(_digest(manifest)), manifest),
                ("index.json", index),
            ):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                out.addfile(info, io.BytesIO(data))
        Path(tmp).replace(tarball)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return new


@contextlib.contextmanager
def open_blob(tarball: Path, digest: str) -> Iterator[IO[bytes]]:
    """A blob of the layout as a stream at its start, checked against its digest first: read
    in chunks, so a layer of gigabytes is never held whole."""
    with tarfile.open(tarball) as tar:
        member = _open(tar, _member(digest))
        hashed = hashlib.sha256()
        while chunk := member.read(_CHUNK):
            hashed.update(chunk)
        got = "sha256:" + hashed.hexdigest()
        if got != digest:
            raise ValueError(f"{tarball}: blob {digest} hashes to {got}")
        member.seek(0)
        yield member
