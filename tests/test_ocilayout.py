"""An exported image says when its commit was made, not when an engine made it: the same
layout with other engine times gives the same manifest digest after normalize (no engine)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from typing import TYPE_CHECKING

from pipeline.supply import ocilayout
from tests.conftest import tarball_facts

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

COMMIT = "2026-01-02T03:04:05Z"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layout(
    path: Path, when: str, step: str = "buildkit", layers: Sequence[bytes] = (b"layer bytes",)
) -> Path:
    """An OCI layout as an engine exports it (one layer unless ``layers`` are given), its
    times all ``when``, its history describing each layer as ``step``."""
    config = json.dumps(
        {
            "created": when,
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["A=1"]},
            "rootfs": {"type": "layers", "diff_ids": [_sha(layer) for layer in layers]},
            "history": [{"created": when, "created_by": step, "comment": step} for _ in layers],
        }
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
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _sha(layer),
                    "size": len(layer),
                }
                for layer in layers
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _sha(manifest),
                    "size": len(manifest),
                }
            ],
        }
    ).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in (
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", index),
            *((f"blobs/sha256/{_sha(d)[7:]}", d) for d in (*layers, config, manifest)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_engine_times_give_way_to_the_commit_time(tmp_path: Path):
    one = layout(tmp_path / "one.tar", "2026-11-30T10:00:00Z")
    two = layout(tmp_path / "two.tar", "2026-11-30T11:11:11Z")
    assert tarball_facts(one).digest != tarball_facts(two).digest
    first, second = ocilayout.normalize(one, COMMIT), ocilayout.normalize(two, COMMIT)
    assert first.digest == second.digest == tarball_facts(one).digest
    assert tarball_facts(two).digest == first.digest
    config = json.loads(ocilayout.read(one).config)
    assert config["created"] == COMMIT
    assert [h["created"] for h in config["history"]] == [COMMIT]
    assert config["config"] == {"Env": ["A=1"]}  # nothing else changes
    # layers are untouched, and every blob is where its digest says
    (layer,) = ocilayout.read(one).layers
    with ocilayout.open_blob(one, layer["digest"]) as blob:
        assert blob.read() == b"layer bytes"
    assert ocilayout.normalize(one, COMMIT).digest == first.digest  # idempotent
    with tarfile.open(one) as tar:
        names = tar.getnames()
    assert "oci-layout" in names
    assert len([n for n in names if n.startswith("blobs/sha256/")]) == 3  # old ones gone


def test_each_engines_words_for_a_step_give_way(tmp_path: Path):
    """v0.11 and v0.21 describe the same layer in their own words: after normalize their
    images are one image."""
    old = layout(tmp_path / "v011.tar", COMMIT, "copy /tmp/pipeline-layer /")
    new = layout(tmp_path / "v021.tar", COMMIT, "Directory.withDirectory")
    assert tarball_facts(old).digest != tarball_facts(new).digest
    assert ocilayout.normalize(old, COMMIT).digest == ocilayout.normalize(new, COMMIT).digest
    assert json.loads(ocilayout.read(old).config)["history"] == [{"created": COMMIT}]
