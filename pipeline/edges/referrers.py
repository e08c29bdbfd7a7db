"""Attestations as OCI artifacts that refer to their image, by the ORAS project's client
(oras-py) for the registry protocol and its authentication.

An attestation is pushed by digest as a manifest whose ``subject`` is the image. Registries
with the referrers API list it themselves; for those without, the tag fallback scheme of the
OCI distribution spec (as ORAS and cosign use it) keeps an index of referrers under the tag
``sha256-<image digest>``. Reading goes the same two ways.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from pipeline.edges import registry as policy
from pipeline.edges.registry import (
    RegistryError,
    UnansweredError,
    endpoint,
    is_local,
    session,
    side_by_side,
    unreachable,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from contextlib import AbstractContextManager

    import requests

__all__ = ["Client", "ContentMismatchError", "Document", "RegistryError"]

EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER = "application/vnd.docker.distribution"
ACCEPT = f"{INDEX}, {MANIFEST}, {DOCKER}.manifest.v2+json, {DOCKER}.manifest.list.v2+json"
OK, CREATED, ACCEPTED, NOT_FOUND = 200, 201, 202, 404
# Answers to a blob upload's last request after which the upload may succeed when begun
# again: the upload unknown (expired), too many requests, and the registry's or a gateway's
# failures; and those of a gateway that gave up waiting while the registry may still commit.
UPLOAD_AGAIN = frozenset({NOT_FOUND, 408, 429, 500, 502, 503, 504})
GAVE_UP = frozenset({502, 504})
POLL = 1.0  # seconds between looks for a blob whose commit was not answered
UNAUTHORIZED, FORBIDDEN = 401, 403
CREDENTIALS_FIX = (
    "set PIPELINE_REGISTRY_USERNAME (or --registry-username) and PIPELINE_REGISTRY_PASSWORD "
    "to an account or token with access to it"
)


# The repository a registry API URL is about ("" for /v2/ itself): a token's scope.
_REPOSITORY = re.compile(r"/v2/(.+?)/(?:blobs|manifests|tags|referrers)/")

Body = bytes | IO[bytes]  # a request's body: bytes, or a stream read as it is sent


def _descriptor(data: bytes, media_type: str) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


@dataclass(frozen=True)
class Document:
    """What ``Client.attach_all`` pushes as one artifact referring to an image."""

    artifact_type: str
    payload: bytes
    media_type: str
    annotations: Mapping[str, str] = field(default_factory=dict)


class ContentMismatchError(RegistryError):
    """The registry answered with content other than what was asked for: bytes that do not
    hash to the digest asked, or no manifest where one should be."""


class Client:
    """One registry, as an anonymous client or as ``username``."""

    def __init__(
        self, registry: str, username: str | None = None, password: str | None = None
    ) -> None:
        import oras.auth

        url = endpoint(registry)
        self.registry = url.split("://", 1)[1]  # the host the API answers on
        # oras-py's token exchange on our session: every request bounded (timeouts, a few
        # retries of passing failures), the token requests included. Its whole client
        # (oras.provider) is not loaded: it imports jsonschema and its format checkers, which
        # made a client cost 1.2 CPU-s (0.12 without) in every process that talks to a
        # registry: `verify`, a build that reads shared results.
        bounded = session()
        self._auth = oras.auth.get_auth_backend("token", bounded, is_local(registry))
        self._tokens: dict[str, str] = {}  # repository: its Bearer token
        self._basic = ""
        if username and password:
            self._auth.set_basic_auth(username, password)
            pair = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._basic = f"Basic {pair}"
        self._http = bounded
        self._once = session(resend=False)  # a blob upload's last request: never sent twice
        self._base = f"{url}/v2"
        # What attaching learned (or ``knows`` said), kept for the client's later attachments:
        # each subject's (size, media type) by (repository, digest), the blobs it put by
        # (repository, digest), whether each repository answers the referrers API.
        self._subjects: dict[tuple[str, str], tuple[int, str]] = {}
        self._put: policy.Once[tuple[str, str], None] = policy.Once()
        self._referrers_api: dict[str, bool] = {}

    def _request(
        self,
        method: str,
        url: str,
        body: Body | None = None,
        headers: dict[str, str] | None = None,
        commit: int | None = None,
    ) -> Any:  # noqa: ANN401 - requests' Response, imported lazily
        """One request, authenticated as the registry asks. A registry that takes HTTP Basic
        credentials gets them at once. One that answers with a Bearer challenge (Docker's token
        protocol: Docker Hub, GHCR, most registries) gets a token of the scope the challenge
        names, from its token endpoint (for the credentials, else anonymous), and the request
        again. The token is kept for the repository, whose next requests carry it at once: a
        blob is not sent to be refused. A token is good for its scope only (a repository, and
        for a mount the one it mounts from), so each repository has its own, renewed when the
        registry asks for more (a push after a pull) or again (expired).

        With ``commit``, the size of the blob the request commits (an upload's last request):
        it is sent once, never again after it reached the registry, and its answer is waited
        for as ``registry.commit_timeout`` says."""
        repository = found[1] if (found := _REPOSITORY.search(url)) else ""
        send = self._send if commit is None else self._commit(commit)
        with self._answered(method, url):
            response = send(method, url, body, headers, self._tokens.get(repository))
            challenge = response.headers.get("WWW-Authenticate", "")
            if response.status_code == UNAUTHORIZED and challenge.lower().startswith("bearer"):
                token = self._token(challenge)
                if token is not None:
                    self._tokens[repository] = token
                    response = send(method, url, body, headers, token)
        return self._allowed(method, url, response)

    def _send(
        self,
        method: str,
        url: str,
        body: Body | None,
        headers: dict[str, str] | None,
        token: str | None,
        http: requests.Session | None = None,
        timeout: tuple[float, float] | None = None,
    ) -> Any:  # noqa: ANN401 - requests' Response
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        elif self._basic:
            sent["Authorization"] = self._basic
        if not isinstance(body, bytes | None):
            body.seek(0)  # a stream, from its start again if an earlier try read it
        http = http or self._http
        return http.request(method, url, data=body, headers=sent, timeout=timeout)

    def _commit(self, size: int) -> Callable[..., Any]:
        """``_send`` for the request that commits a blob of ``size`` bytes."""
        return functools.partial(self._send, http=self._once, timeout=policy.commit_timeout(size))

    def _token(self, challenge: str) -> str | None:
        """A token for a Bearer challenge's scope (None when the token endpoint refuses)."""
        from oras.auth.utils import parse_auth_header

        asked = parse_auth_header(challenge)
        if not asked.realm:
            return None
        token = self._auth.request_token(asked)
        return str(token) if token else None

    @contextlib.contextmanager
    def _answered(self, method: str, url: str) -> Iterator[None]:
        """Any failure to get an answer as one RegistryError naming the registry and the fix."""
        import requests

        try:
            yield
        except requests.RequestException as exc:
            raise unreachable(self.registry, exc) from None
        except ValueError as exc:  # a token endpoint that answered with no JSON
            raise RegistryError(
                f"registry {self.registry} gave no token ({method} {url}: {exc}); "
                f"fix: {CREDENTIALS_FIX}"
            ) from None

    def _allowed(self, method: str, url: str, response: Any) -> Any:  # noqa: ANN401 - requests' Response
        if response.status_code in (UNAUTHORIZED, FORBIDDEN):
            raise RegistryError(
                f"registry {self.registry} refused {method} {url}: {response.status_code} "
                f"{response.reason}; fix: {CREDENTIALS_FIX}"
            )
        return response

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """A manifest's bytes, media type and digest (checked when asked by digest)."""
        found = self.find_manifest(repository, reference)
        if found is None:
            sep = "@" if reference.startswith("sha256:") else ":"
            raise RegistryError(
                f"registry {self.registry} has no manifest {repository}{sep}{reference} (404); "
                "fix: check the image's name and tag"
            )
        return found

    def find_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str] | None:
        """As ``manifest``, or None when the registry has no such tag or digest."""
        url = f"{self._base}/{repository}/manifests/{reference}"
        response = self._request("GET", url, headers={"Accept": ACCEPT})
        if response.status_code == NOT_FOUND:
            return None
        if response.status_code != OK:
            raise RegistryError(f"GET {url}: {response.status_code} {response.reason}")
        body = response.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise ContentMismatchError(f"{repository}@{reference}: the registry sent {digest}")
        try:
            media_type = json.loads(body).get("mediaType")
        except (ValueError, AttributeError):
            raise ContentMismatchError(f"GET {url}: the registry sent no JSON manifest") from None
        return body, str(media_type or response.headers.get("Content-Type")), digest

    def blob(self, repository: str, digest: str) -> bytes:
        """A blob's bytes, checked against its digest."""
        url = f"{self._base}/{repository}/blobs/{digest}"
        response = self._request("GET", url)
        if response.status_code != OK:
            raise RegistryError(f"GET {url}: {response.status_code} {response.reason}")
        got = "sha256:" + hashlib.sha256(response.content).hexdigest()
        if got != digest:
            raise ContentMismatchError(f"{repository} blob {digest}: content hashes to {got}")
        return bytes(response.content)

    def _put_blob(self, repository: str, body: Body, descriptor: dict[str, Any]) -> None:
        """A blob uploaded whole: a session, then one PUT of its bytes with its digest (a
        stream is read as it is sent, never held whole), at most ``ATTEMPTS`` times.

        The PUT is answered once the registry has committed the blob, which on object storage
        copies it: the answer is waited for in proportion to the blob's size, and the PUT is
        never sent again to the upload it went to, which the commit consumes. When no answer
        comes, or a gateway's (502, 504: it gave up while the registry may still commit), the
        blob is looked for in the repository for as long again; there, it is pushed. Else, and
        after the other answers that a new upload may pass (``UPLOAD_AGAIN``), the upload
        begins again."""
        digest, size = str(descriptor["digest"]), int(descriptor["size"])
        start = f"{self._base}/{repository}/blobs/uploads/"
        headers = {"Content-Type": "application/octet-stream"}
        for attempt in range(1, policy.ATTEMPTS + 1):
            response = self._request("POST", start)
            location = response.headers.get("Location")
            if response.status_code != ACCEPTED or not location:
                raise RegistryError(f"POST {start}: {response.status_code} {response.text[:300]}")
            url = urllib.parse.urljoin(start, location)
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
            try:
                response = self._request("PUT", url, body, headers, commit=size)
            except UnansweredError as exc:  # the registry's problem, less the fix said below
                status, answer = None, "none: " + str(exc).split("; fix: ", 1)[0]
            else:
                status = response.status_code
                answer = f"{status} {response.text[:300]}"
            if status in (OK, CREATED):
                return
            sent = isinstance(body, bytes) or body.tell() >= size
            patience = policy.commit_timeout(size)[1] if sent and status in (None, *GAVE_UP) else 0
            if self._arrives(repository, digest, patience):
                return
            if status is not None and status not in UPLOAD_AGAIN:
                break
            if attempt < policy.ATTEMPTS:
                time.sleep(min(policy.BACKOFF_MAX, 0.5 * attempt))
        raise RegistryError(
            f"registry {self.registry} did not take blob {digest} ({size} bytes) into "
            f"{repository}: the upload's last answer was {answer}; fix: check that the registry "
            "is up and its storage takes blobs of this size, or try again later"
        )

    def _arrives(self, repository: str, digest: str, patience: float) -> bool:
        """Whether the repository holds the blob, looked for until ``patience`` seconds pass."""
        deadline = time.monotonic() + patience
        while not self.has_blob(repository, digest):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(POLL, left))
        return True

    def has_blob(self, repository: str, digest: str) -> bool:
        """Whether the repository already holds a blob (a push then skips it)."""
        response = self._request("HEAD", f"{self._base}/{repository}/blobs/{digest}")
        return bool(response.status_code == OK)

    def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        """The blob linked into the repository from ``source``, another repository of this
        registry that holds it, without sending its bytes (the distribution spec's
        cross-repository mount). False when the registry did not mount it: it may open an
        upload instead (202), which is closed again, or refuse."""
        query = urllib.parse.urlencode({"mount": digest, "from": source})
        start = f"{self._base}/{repository}/blobs/uploads/"
        response = self._request("POST", f"{start}?{query}")
        if response.status_code == CREATED:
            return True
        location = response.headers.get("Location")
        if response.status_code == ACCEPTED and location:  # an upload nobody will finish
            with contextlib.suppress(RegistryError):
                self._request("DELETE", urllib.parse.urljoin(start, location))
        return False

    def push_known_blob(
        self,
        repository: str,
        descriptor: dict[str, Any],
        opened: Callable[[], AbstractContextManager[Body]],
        source: str | None = None,
    ) -> None:
        """A blob whose descriptor is known into the repository unless it is there already:
        mounted from ``source`` when given and the registry can, else ``opened`` and sent.
        ``opened`` gives bytes or a stream already checked against the digest
        (``ocilayout.open_blob`` does)."""
        digest = str(descriptor["digest"])
        if self.has_blob(repository, digest):
            return
        if source and self.mount_blob(repository, digest, source):
            return
        with opened() as body:
            self._put_blob(repository, body, descriptor)

    def push_blob(self, repository: str, data: bytes, media_type: str) -> dict[str, Any]:
        """A blob into the repository unless it is there already; returns its descriptor."""
        descriptor = _descriptor(data, media_type)
        self.push_known_blob(repository, descriptor, lambda: contextlib.nullcontext(data))
        return descriptor

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """Store a manifest under a tag or its digest; returns its digest."""
        url = f"{self._base}/{repository}/manifests/{reference}"
        response = self._request("PUT", url, body, {"Content-Type": media_type})
        if response.status_code not in (OK, CREATED):
            raise RegistryError(f"PUT {url}: {response.status_code} {response.text[:300]}")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def delete_tag(self, repository: str, tag: str) -> bool:
        """Remove a tag (not the manifest it names); False when the registry does not allow
        deleting tags (the distribution spec lets it answer 400, 405 or 501)."""
        url = f"{self._base}/{repository}/manifests/{tag}"
        response = self._request("DELETE", url)
        return response.status_code in (OK, ACCEPTED, NOT_FOUND)

    def knows(self, repository: str, manifest: bytes, media_type: str) -> None:
        """A manifest the repository holds, as its pusher has it: ``attach`` reads it no more
        to refer to it."""
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        self._subjects[repository, digest] = (len(manifest), media_type)

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
        document = Document(artifact_type, payload, media_type, annotations or {})
        return self.attach_all(repository, subject, [document])[0]

    def attach_all(self, repository: str, subject: str, documents: Sequence[Document]) -> list[str]:
        """Push each document as an artifact referring to the manifest ``subject``; returns
        their digests, in order. What they share crosses once: the subject manifest is read
        (unless ``knows`` said it), the empty config put, the referrers API asked about, and
        where the registry has no such API the fallback index written, with every document.
        The documents' own blobs and manifests go side by side."""
        if (repository, subject) not in self._subjects:
            body, subject_type, _ = self.manifest(repository, subject)
            self._subjects[repository, subject] = (len(body), subject_type)
        size, subject_type = self._subjects[repository, subject]
        config = _descriptor(b"{}", EMPTY)
        self._put_once(repository, b"{}", config)  # before the documents, which all name it

        def push(document: Document) -> tuple[dict[str, Any], str, int]:
            layer = _descriptor(document.payload, document.media_type)
            self._put_once(repository, document.payload, layer)
            manifest: dict[str, Any] = {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "artifactType": document.artifact_type,
                "config": config,
                "layers": [layer],
                "subject": {"mediaType": subject_type, "digest": subject, "size": size},
            }
            if document.annotations:
                manifest["annotations"] = dict(document.annotations)
            raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
            self.put_manifest(repository, digest, raw, MANIFEST)
            return manifest, digest, len(raw)

        made = side_by_side(push, documents, name="attach")
        if not self._has_referrers_api(repository, subject):
            self._add_to_fallback_index(repository, subject, made)
        return [digest for _, digest, _ in made]

    def _put_once(self, repository: str, data: bytes, descriptor: dict[str, Any]) -> None:
        """A blob put into the repository unless this client put it there already, never by
        two threads at once (``registry.KeyedLocks`` says why)."""
        key = (repository, str(descriptor["digest"]))
        self._put.get(key, lambda: self._put_blob(repository, data, descriptor))

    def _has_referrers_api(self, repository: str, subject: str) -> bool:
        """Whether the repository's registry lists referrers (asked once per repository: the
        answer is the registry's, not the subject's)."""
        if repository not in self._referrers_api:
            url = f"{self._base}/{repository}/referrers/{subject}"
            response = self._request("GET", url, headers={"Accept": INDEX})
            self._referrers_api[repository] = bool(
                response.status_code == OK and INDEX in response.headers.get("Content-Type", "")
            )
        return self._referrers_api[repository]

    @staticmethod
    def _fallback_tag(subject: str) -> str:
        return subject.replace(":", "-")

    def _fallback_index(self, repository: str, subject: str) -> dict[str, Any]:
        found = self.find_manifest(repository, self._fallback_tag(subject))
        if found is None:
            return {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}
        return json.loads(found[0])  # type: ignore[no-any-return]

    def _add_to_fallback_index(
        self, repository: str, subject: str, made: Sequence[tuple[dict[str, Any], str, int]]
    ) -> None:
        """The fallback tag's index of ``subject`` with the artifacts ``made`` (manifest,
        digest, size) in it: read, changed and written once for all of them."""
        index = self._fallback_index(repository, subject)
        digests = {digest for _, digest, _ in made}
        entries = [m for m in index.get("manifests", []) if m.get("digest") not in digests]
        for manifest, digest, size in made:
            entry: dict[str, Any] = {
                "mediaType": MANIFEST,
                "digest": digest,
                "size": size,
                "artifactType": manifest["artifactType"],
            }
            if manifest.get("annotations"):
                entry["annotations"] = manifest["annotations"]
            entries.append(entry)
        index["manifests"] = entries
        raw = json.dumps(index, separators=(",", ":"), sort_keys=True).encode()
        self.put_manifest(repository, self._fallback_tag(subject), raw, INDEX)

    def referrers(self, repository: str, subject: str) -> list[dict[str, Any]]:
        """Descriptors of the artifacts referring to ``subject``: by the referrers API, else
        from the fallback tag's index."""
        url = f"{self._base}/{repository}/referrers/{subject}"
        response = self._request("GET", url, headers={"Accept": INDEX})
        if response.status_code == OK and INDEX in response.headers.get("Content-Type", ""):
            return list(response.json().get("manifests", []))
        return list(self._fallback_index(repository, subject).get("manifests", []))
