"""Attestations as OCI artifacts that refer to their image, by the ORAS project's client
(oras-py) for the registry protocol and its authentication.

An attestation is pushed by digest as a manifest whose ``subject`` is the image. Registries
with the referrers API list it themselves; for those without, the tag fallback scheme of the
OCI distribution spec (as ORAS and cosign use it) keeps an index of referrers under the tag
``sha256-<image digest>``. Reading goes the same two ways.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from pipeline.registry import endpoint, is_local

EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER = "application/vnd.docker.distribution"
ACCEPT = f"{INDEX}, {MANIFEST}, {DOCKER}.manifest.v2+json, {DOCKER}.manifest.list.v2+json"
OK, CREATED, NOT_FOUND = 200, 201, 404


class RegistryError(Exception):
    """The registry refused or failed a request; says which and why."""


class Client:
    """One registry, as an anonymous client or as ``username``."""

    def __init__(
        self, registry: str, username: str | None = None, password: str | None = None
    ) -> None:
        import oras.provider

        url = endpoint(registry)
        self.registry = url.split("://", 1)[1]  # the host the API answers on
        self._oras = oras.provider.Registry(hostname=self.registry, insecure=is_local(registry))
        if username and password:
            self._oras.auth.set_basic_auth(username, password)
        self._base = f"{url}/v2"

    def _request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:  # noqa: ANN401 - requests' Response, imported lazily
        try:
            return self._oras.do_request(url, method, data=body, headers=dict(headers or {}))
        except Exception as exc:
            raise RegistryError(f"{method} {url}: {exc}") from exc

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """A manifest's bytes, media type and digest (checked when asked by digest)."""
        url = f"{self._base}/{repository}/manifests/{reference}"
        response = self._request("GET", url, headers={"Accept": ACCEPT})
        if response.status_code != OK:
            raise RegistryError(f"GET {url}: {response.status_code} {response.reason}")
        body = response.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"{repository}@{reference}: the registry sent {digest}")
        media_type = json.loads(body).get("mediaType") or response.headers.get("Content-Type")
        return body, str(media_type), digest

    def blob(self, repository: str, digest: str) -> bytes:
        """A blob's bytes, checked against its digest."""
        url = f"{self._base}/{repository}/blobs/{digest}"
        response = self._request("GET", url)
        if response.status_code != OK:
            raise RegistryError(f"GET {url}: {response.status_code} {response.reason}")
        got = "sha256:" + hashlib.sha256(response.content).hexdigest()
        if got != digest:
            raise RegistryError(f"{repository} blob {digest}: content hashes to {got}")
        return bytes(response.content)

    def _put_blob(self, repository: str, data: bytes, media_type: str) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        descriptor = {"mediaType": media_type, "digest": digest, "size": len(data)}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "blob"
            path.write_bytes(data)
            target = f"{self.registry}/{repository}:x"
            response = self._oras.upload_blob(str(path), target, descriptor)
        if response.status_code not in (OK, CREATED, 202):
            raise RegistryError(f"blob upload to {repository}: {response.status_code}")
        return descriptor

    def _put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        url = f"{self._base}/{repository}/manifests/{reference}"
        response = self._request("PUT", url, body, {"Content-Type": media_type})
        if response.status_code not in (OK, CREATED):
            raise RegistryError(f"PUT {url}: {response.status_code} {response.text[:300]}")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def attach(
        self,
        repository: str,
        subject: str,
        artifact_type: str,
        payload: bytes,
        media_type: str,
        annotations: dict[str, str] | None = None,
    ) -> str:
        """Push ``payload`` as an artifact referring to the manifest ``subject``; returns the
        artifact's digest."""
        body, subject_type, _ = self.manifest(repository, subject)
        layer = self._put_blob(repository, payload, media_type)
        config = self._put_blob(repository, b"{}", EMPTY)
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "artifactType": artifact_type,
            "config": config,
            "layers": [layer],
            "subject": {"mediaType": subject_type, "digest": subject, "size": len(body)},
        }
        if annotations:
            manifest["annotations"] = annotations
        raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        self._put_manifest(repository, digest, raw, MANIFEST)
        if not self._has_referrers_api(repository, subject):
            self._add_to_fallback_index(repository, subject, manifest, digest, len(raw))
        return digest

    def _has_referrers_api(self, repository: str, subject: str) -> bool:
        url = f"{self._base}/{repository}/referrers/{subject}"
        response = self._request("GET", url, headers={"Accept": INDEX})
        return bool(
            response.status_code == OK and INDEX in response.headers.get("Content-Type", "")
        )

    @staticmethod
    def _fallback_tag(subject: str) -> str:
        return subject.replace(":", "-")

    def _fallback_index(self, repository: str, subject: str) -> dict[str, Any]:
        try:
            body, _, _ = self.manifest(repository, self._fallback_tag(subject))
        except RegistryError:
            return {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}
        return json.loads(body)  # type: ignore[no-any-return]

    def _add_to_fallback_index(
        self, repository: str, subject: str, manifest: dict[str, Any], digest: str, size: int
    ) -> None:
        index = self._fallback_index(repository, subject)
        entry: dict[str, Any] = {
            "mediaType": MANIFEST,
            "digest": digest,
            "size": size,
            "artifactType": manifest["artifactType"],
        }
        if manifest.get("annotations"):
            entry["annotations"] = manifest["annotations"]
        kept = [m for m in index.get("manifests", []) if m.get("digest") != digest]
        index["manifests"] = [*kept, entry]
        raw = json.dumps(index, separators=(",", ":"), sort_keys=True).encode()
        self._put_manifest(repository, self._fallback_tag(subject), raw, INDEX)

    def referrers(self, repository: str, subject: str) -> list[dict[str, Any]]:
        """Descriptors of the artifacts referring to ``subject``: by the referrers API, else
        from the fallback tag's index."""
        url = f"{self._base}/{repository}/referrers/{subject}"
        response = self._request("GET", url, headers={"Accept": INDEX})
        if response.status_code == OK and INDEX in response.headers.get("Content-Type", ""):
            return list(response.json().get("manifests", []))
        return list(self._fallback_index(repository, subject).get("manifests", []))
