"""Resolving an image reference to its manifest digest by the registry's HTTP API: one HEAD
request (two with an anonymous token), no engine, no pull. Dagger-free and stdlib-only.
"""

from __future__ import annotations

import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

DOCKER_HUB = "registry-1.docker.io"
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)
TIMEOUT = 5.0
UNAUTHORIZED = 401


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, ref: str) -> Reference:
        name, _, digest = ref.partition("@")
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, rest
        else:
            registry, path = "docker.io", name
            if "/" not in path:
                path = f"library/{path}"
        tag = None
        if ":" in path.rsplit("/", 1)[-1]:
            path, tag = path.rsplit(":", 1)
        if not digest and not tag:
            tag = "latest"
        return cls(registry, path, tag, digest or None)

    @property
    def endpoint(self) -> str:
        return endpoint(self.registry)

    @property
    def reference(self) -> str:
        """The digest when there is one, else the tag: what the manifest is asked by."""
        return self.digest or self.tag or "latest"


def is_local(host: str) -> bool:
    """A loopback registry, spoken to over plain HTTP as Docker and BuildKit do."""
    return re.match(r"^(localhost|127\.\d+\.\d+\.\d+)(:\d+)?$", host) is not None


def endpoint(host: str) -> str:
    """Where a registry host answers: https, or http on loopback; Docker Hub by its API host."""
    host = DOCKER_HUB if host == "docker.io" else host
    return f"{'http' if is_local(host) else 'https'}://{host}"


def _bearer(challenge: str) -> str | None:
    """An anonymous pull token for a 'Bearer realm=...' challenge."""
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = params.pop("realm", None)
    if not challenge.lower().startswith("bearer") or realm is None:
        return None
    url = f"{realm}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=TIMEOUT, context=ssl.create_default_context()) as r:  # noqa: S310 - the registry's own token realm
        body = json.loads(r.read())
    token = body.get("token") or body.get("access_token")
    return str(token) if token else None


def resolve(ref: str) -> str | None:  # noqa: PLR0911 - every way a registry says "cannot tell"
    """``ref`` pinned to its manifest digest (``name@sha256:...``), or None when the registry
    cannot say (offline, private, unknown): the caller then treats the base as unknown."""
    parsed = Reference.parse(ref)
    if parsed.digest:
        return ref
    name = ref.partition("@")[0].rsplit(":", 1)[0] if parsed.tag else ref
    url = f"{parsed.endpoint}/v2/{parsed.repository}/manifests/{parsed.tag}"
    headers = {"Accept": MANIFEST_TYPES}
    context = ssl.create_default_context()
    for _ in range(2):
        request = urllib.request.Request(url, headers=headers, method="HEAD")  # noqa: S310 - http(s) only, built above
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:  # noqa: S310
                digest = response.headers.get("Docker-Content-Digest")
                return f"{name}@{digest}" if digest else None
        except urllib.error.HTTPError as exc:
            challenge = exc.headers.get("WWW-Authenticate", "")
            if exc.code != UNAUTHORIZED or "Authorization" in headers:
                return None
            try:
                token = _bearer(challenge)
            except (OSError, ValueError):
                return None
            if token is None:
                return None
            headers["Authorization"] = f"Bearer {token}"
        except (OSError, ValueError):
            return None
    return None
