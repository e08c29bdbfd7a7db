"""The result cache's second level: verified results and passed checks, shared through an OCI
registry by every runner and engine that reaches it (``--cache-registry``).

Each entry is a small OCI artifact in one repository: an empty config and one layer, the same
sealed document the local cache keeps (``resultcache``), with the scope it was written for. Its
tag is a digest of its scope, kind and key, so any runner computes it from the inputs alone, and
a registry holding many scopes and many keys never needs a listing.

Trust:
- a run writes only its own scope; it reads its own scope, then the fallback scope (main's);
- an entry is used only when its blob hashes to the digest its manifest names, it proves
  itself (its seal: kind, key and value) and it names the scope it was asked from; else it is
  ignored with a warning and the work is done again;
- the registry's answers never fail a run: an unreachable registry is said once and the run
  goes on with the local cache; a write refused (a read-only token) is said once.

The local ``.pipeline/cache`` stays the first level: what the registry answers is stored there
too, and the why-it-rebuilt entries (``inputs``) stay local.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pipeline.core.log import get_logger
from pipeline.core.outcomes import Kind
from pipeline.edges.referrers import EMPTY, MANIFEST, Client, ContentMismatchError
from pipeline.edges.registry import Once, Reference, RegistryError
from pipeline.edges.resultcache import FORMAT, proven, seal

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from concurrent.futures import Future

    from pipeline.edges.resultcache import ResultCache

ARTIFACT_TYPE = "application/vnd.pipeline.result.v1"
ENTRY_TYPE = "application/vnd.pipeline.result.entry.v1+json"
SHARED = frozenset({Kind.RESULTS, Kind.CHECKS})  # the inputs of a last build stay local
WRITERS = 4  # entries pushed at once, beside the run
LOOKUPS = 16  # entries asked for at once


class _UnfitError(Exception):
    """An entry that is not one of ours."""


def tag_for(scope: str, kind: str, key: str) -> str:
    """The tag of an entry: its kind, and a digest of its scope, kind and key."""
    return f"{kind}-" + hashlib.sha256(f"{scope}\0{kind}\0{key}".encode()).hexdigest()


class RegistryStore:
    """Entries of ``scope`` in the repository ``ref`` (``registry/path``), read from
    ``reads`` (the scope, then its fallback) and written, when ``write``, to the scope only."""

    def __init__(
        self,
        ref: str,
        scope: str,
        reads: Sequence[str],
        write: bool,
        client: Callable[[str], Client],
    ) -> None:
        parsed = Reference.parse(ref)
        self.where = ref
        self.repository = parsed.repository
        self.scope = scope
        self.reads = tuple(dict.fromkeys(reads))
        self.write = write
        self._host = parsed.registry
        self._factory = client
        self._clients = threading.local()  # one client per thread: lookups run side by side
        self._lock = threading.Lock()
        # what the registry answered for each (kind, key) this run: asked once, even a miss
        self._answers: dict[tuple[str, str], tuple[dict[str, Any], str] | None] = {}
        self._broken = False  # the registry did not answer: said once, not asked again
        self._refused = False
        self._writers: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        # The empty config every entry's manifest names: pushed once, by one writer (writers
        # that each pushed it raced as ``registry.KeyedLocks`` says, and the refused manifest
        # stopped the run's writes).
        self._config: Once[str, dict[str, Any]] = Once()
        self.found = 0  # entries the registry answered this run
        self.written = 0

    @property
    def _client(self) -> Client:
        made: Client | None = getattr(self._clients, "client", None)
        if made is None:
            made = self._clients.client = self._factory(self._host)
        return made

    def get(self, kind: Kind, key: str) -> tuple[dict[str, Any], str] | None:
        """The entry's value and the scope it came from, or None."""
        if kind not in SHARED or self._broken:
            return None
        if (kind, key) not in self._answers:
            self._answers[kind, key] = self._lookup(kind, key)
        answer = self._answers[kind, key]
        if answer is not None:
            self.found += 1
        return answer

    def prefetch(self, items: Iterable[tuple[Kind, str]]) -> None:
        """Ask the registry for these entries at once (a run's every lookup costs one round
        trip, not one per service): ``get`` then answers from what came back."""
        todo = [i for i in dict.fromkeys(items) if i[0] in SHARED and i not in self._answers]
        if not todo or self._broken:
            return
        with ThreadPoolExecutor(LOOKUPS, thread_name_prefix="cache-registry-get") as threads:
            answers = list(threads.map(lambda item: self._lookup(*item), todo))
        if not self._broken:
            self._answers.update(zip(todo, answers, strict=True))

    def _lookup(self, kind: Kind, key: str) -> tuple[dict[str, Any], str] | None:
        for scope in self.reads:
            value = self._fetch(scope, kind, key)
            if self._broken:
                return None
            if value is not None:
                return value, scope
        return None

    def _fetch(self, scope: str, kind: Kind, key: str) -> dict[str, Any] | None:
        tag = tag_for(scope, kind, key)
        try:
            entry = self._entry(tag)
        except (_UnfitError, ContentMismatchError) as exc:
            entry, why = None, str(exc)
        except RegistryError as exc:
            self._unreachable(exc)
            return None
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            entry, why = None, f"malformed ({exc!r})"
        else:
            if entry is None:
                return None
            why = ""
        value = None
        if entry is not None and entry.get("scope") != scope:
            why = f"it does not say it was written for scope {scope}"
        elif entry is not None and (value := proven(entry, kind, key)) is None:
            why = "it does not prove itself (its digest, kind or key)"
        if value is None:
            get_logger().warning("cache_entry_ignored", registry=f"{self.where}:{tag}", reason=why)
        return value

    def _entry(self, tag: str) -> dict[str, Any] | None:
        """The document a tag holds, None when there is no such tag."""
        found = self._client.find_manifest(self.repository, tag)
        if found is None:
            return None
        manifest = json.loads(found[0])
        layer = manifest["layers"][0]
        if manifest.get("artifactType") != ARTIFACT_TYPE or layer["mediaType"] != ENTRY_TYPE:
            raise _UnfitError("it is no result entry of this pipeline")
        entry = json.loads(self._client.blob(self.repository, layer["digest"]))
        if not isinstance(entry, dict):
            raise _UnfitError("it is no JSON object")
        return entry

    def _unreachable(self, exc: Exception) -> None:
        with self._lock:
            if self._broken:
                return
            self._broken = True
        get_logger().warning(
            "cache_registry_unreachable",
            registry=self.where,
            reason=str(exc),
            detail="this run goes on with the local result cache",
        )

    def put(self, kind: Kind, key: str, value: dict[str, Any]) -> None:
        """Push an entry of this run's scope, beside the run (``close`` waits for it)."""
        if not self.write or kind not in SHARED or self._broken or self._refused:
            return
        self._answers[kind, key] = (value, self.scope)  # this run's own entry, read first
        if self._writers is None:
            self._writers = ThreadPoolExecutor(WRITERS, thread_name_prefix="cache-registry")
        self._pending.append(self._writers.submit(self._push, kind, key, value))

    def _push(self, kind: Kind, key: str, value: dict[str, Any]) -> None:
        body = {
            "format": FORMAT,
            "kind": str(kind),
            "key": key,
            "scope": self.scope,
            "digest": seal(kind, key, value),
            "value": value,
        }
        data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        tag = tag_for(self.scope, kind, key)
        try:
            config = self._config.get(
                self.repository, lambda: self._client.push_blob(self.repository, b"{}", EMPTY)
            )
            layer = self._client.push_blob(self.repository, data, ENTRY_TYPE)
            manifest = {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "artifactType": ARTIFACT_TYPE,
                "config": config,
                "layers": [layer],
                "annotations": {"dev.pipeline.scope": self.scope, "dev.pipeline.kind": kind},
            }
            raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
            self._client.put_manifest(self.repository, tag, raw, MANIFEST)
        except RegistryError as exc:
            if not self._refused:
                self._refused = True
                get_logger().warning(
                    "cache_registry_not_written",
                    registry=self.where,
                    reason=str(exc),
                    detail="results stay in the local cache; the registry is only read",
                )
            return
        self.written += 1

    def close(self) -> None:
        """Wait for the entries being pushed."""
        for pending in self._pending:
            pending.result()
        self._pending.clear()
        if self._writers is not None:
            self._writers.shutdown()
            self._writers = None


class Layered:
    """The local result cache first, then the registry's; what the registry answers is kept
    locally too. ``read``/``write`` switch both levels, as they do the local cache."""

    def __init__(self, local: ResultCache, shared: RegistryStore | None) -> None:
        self.local = local
        self.shared = shared

    @property
    def read(self) -> bool:
        return self.local.read

    @read.setter
    def read(self, value: bool) -> None:
        self.local.read = value

    @property
    def write(self) -> bool:
        return self.local.write

    @write.setter
    def write(self, value: bool) -> None:
        self.local.write = value

    def get(self, kind: Kind, key: str) -> dict[str, Any] | None:
        found = self.local.get(kind, key)
        if found is not None or self.shared is None or not self.local.read:
            return found
        answered = self.shared.get(kind, key)
        if answered is None:
            return None
        value, _scope = answered
        self.local.put(kind, key, value)
        return value

    def prefetch(self, items: Iterable[tuple[Kind, str]]) -> None:
        """Ask the registry at once for the entries the local cache lacks."""
        if self.shared is not None and self.local.read:
            self.shared.prefetch(i for i in items if self.local.get(*i) is None)

    def put(self, kind: Kind, key: str, value: dict[str, Any]) -> None:
        self.local.put(kind, key, value)
        if self.shared is not None and self.local.write:
            self.shared.put(kind, key, value)

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()
