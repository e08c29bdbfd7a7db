"""Verified results shared through a registry (``--cache-registry``): what one runner stores,
another replays with no engine work; a scope writes only itself; an entry that does not prove
itself is ignored. Against the loopback registry (so these run with the engine tests)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from pipeline.core.outcomes import Kind
from pipeline.edges.referrers import EMPTY, MANIFEST, Client
from pipeline.edges.resultcache import ResultCache, seal
from pipeline.edges.resultstore import (
    ARTIFACT_TYPE,
    ENTRY_TYPE,
    Layered,
    RegistryStore,
    tag_for,
)
from tests.conftest import git, pipeline_in, tiny_repo
from tests.faultyregistry import FaultyRegistry

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.engine


@pytest.fixture
def repository(registry: str) -> str:
    """A repository no earlier run has written: ``host/namespace/cache-<random>``."""
    return f"{registry}/cache-{uuid.uuid4().hex[:12]}"


def store(repository: str, scope: str, reads: tuple[str, ...], write: bool = True) -> RegistryStore:
    return RegistryStore(repository, scope, reads, write, Client)


def _events(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("event") == event]


VALUE = {"service": "users", "tests": {"unit": True}, "image": {"digest": "sha256:" + "a" * 64}}


def test_an_entry_written_by_one_runner_is_read_by_another(repository: str):
    writer = store(repository, "main", ("main",))
    writer.put(Kind.RESULTS, "k1", VALUE)
    writer.close()
    assert writer.written == 1

    reader = store(repository, "main", ("main",))
    assert reader.get(Kind.RESULTS, "k1") == (VALUE, "main")
    assert reader.get(Kind.RESULTS, "k2") is None
    assert reader.get(Kind.CHECKS, "k1") is None  # another kind, another tag


def test_entries_pass_through_a_registry_of_scoped_tokens(registry: str):
    """As on GHCR: the store's repository asks for a Bearer token of its scope; the writer's
    entry is read back by another runner."""
    host, namespace = registry.split("/", 1)
    with FaultyRegistry(host, credentials=("ci", "right"), tokens=True) as proxy:
        repository = f"{proxy.address}/{namespace}/cache-{uuid.uuid4().hex[:12]}"

        def as_ci(address: str) -> Client:
            return Client(address, "ci", "right")

        writer = RegistryStore(repository, "main", ("main",), write=True, client=as_ci)
        writer.put(Kind.RESULTS, "k1", VALUE)
        writer.close()
        reader = RegistryStore(repository, "main", ("main",), write=False, client=as_ci)
        assert reader.get(Kind.RESULTS, "k1") == (VALUE, "main")
    assert writer.written == 1
    assert "token" in {outcome for _, _, outcome in proxy.log}, proxy.log


def test_a_pull_request_reads_main_and_never_writes_it(repository: str):
    main = store(repository, "main", ("main",))
    main.put(Kind.RESULTS, "shared", VALUE)
    main.close()
    client = Client(repository.split("/", 1)[0])
    path = repository.split("/", 1)[1]
    before = client.find_manifest(path, tag_for("main", Kind.RESULTS, "shared"))

    pr = store(repository, "pr-7", ("pr-7", "main"))
    assert pr.get(Kind.RESULTS, "shared") == (VALUE, "main")
    changed = {**VALUE, "tests": {"unit": False}}
    pr.put(Kind.RESULTS, "shared", changed)
    pr.put(Kind.RESULTS, "only-pr", VALUE)
    pr.close()

    assert client.find_manifest(path, tag_for("main", Kind.RESULTS, "shared")) == before
    assert client.find_manifest(path, tag_for("main", Kind.RESULTS, "only-pr")) is None
    assert store(repository, "main", ("main",)).get(Kind.RESULTS, "shared") == (VALUE, "main")
    # the pull request reads its own entry first
    assert pr.get(Kind.RESULTS, "shared") == (changed, "pr-7")


def test_a_read_only_run_writes_nothing(repository: str):
    reader = store(repository, "main", ("main",), write=False)
    reader.put(Kind.RESULTS, "k", VALUE)
    reader.close()
    assert reader.written == 0
    assert store(repository, "main", ("main",)).get(Kind.RESULTS, "k") is None


def _push_raw(
    repository: str, tag: str, document: dict[str, Any], artifact: str = ARTIFACT_TYPE
) -> None:
    host, path = repository.split("/", 1)
    client = Client(host)
    data = json.dumps(document).encode()
    config = client.push_blob(path, b"{}", EMPTY)
    layer = client.push_blob(path, data, ENTRY_TYPE)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": artifact,
        "config": config,
        "layers": [layer],
    }
    client.put_manifest(path, tag, json.dumps(manifest).encode(), MANIFEST)


def _sealed(scope: str, key: str, value: dict[str, Any]) -> dict[str, Any]:
    digest = seal(Kind.RESULTS, key, value)
    return {
        "format": 2,
        "kind": "results",
        "key": key,
        "scope": scope,
        "digest": digest,
        "value": value,
    }


FORGERIES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    # a value changed after it was sealed: its digest no longer matches
    "edited value": lambda d: {**d, "value": {**d["value"], "service": "evil"}},
    # an entry of another scope copied under this scope's tag
    "other scope": lambda d: {**d, "scope": "pr-9"},
    # an entry of another key copied under this key's tag
    "other key": lambda d: {**d, "key": "other"},
    "not ours": lambda d: d,
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_forged_entry_is_ignored_with_a_warning(repository: str, forgery: str):
    document = FORGERIES[forgery](_sealed("main", "k", VALUE))
    artifact = "application/vnd.example.other" if forgery == "not ours" else ARTIFACT_TYPE
    _push_raw(repository, tag_for("main", Kind.RESULTS, "k"), document, artifact)
    with capture_logs() as logs:
        assert store(repository, "main", ("main",)).get(Kind.RESULTS, "k") is None
    ignored = _events(logs, "cache_entry_ignored")
    assert len(ignored) == 1
    assert tag_for("main", Kind.RESULTS, "k") in ignored[0]["registry"]


def test_the_genuine_entry_of_the_same_shape_is_used(repository: str):
    """The forgery tests' control: the same document, untouched, is accepted."""
    _push_raw(repository, tag_for("main", Kind.RESULTS, "k"), _sealed("main", "k", VALUE))
    assert store(repository, "main", ("main",)).get(Kind.RESULTS, "k") == (VALUE, "main")


def test_an_unreachable_registry_is_said_once_and_the_local_cache_goes_on(tmp_path: Path):
    local = ResultCache(tmp_path, "main")
    local.put(Kind.RESULTS, "here", VALUE)
    cache = Layered(local, store("localhost:9/cache", "main", ("main", "other")))
    with capture_logs() as logs:
        assert cache.get(Kind.RESULTS, "here") == VALUE
        assert cache.get(Kind.RESULTS, "missing") is None
        assert cache.get(Kind.CHECKS, "missing") is None
        cache.put(Kind.RESULTS, "new", VALUE)
        cache.close()
    assert len(_events(logs, "cache_registry_unreachable")) == 1
    assert local.get(Kind.RESULTS, "new") == VALUE


def test_what_the_registry_answers_is_kept_locally(repository: str, tmp_path: Path):
    writer = store(repository, "main", ("main",))
    writer.put(Kind.CHECKS, "c", {"unit": True})
    writer.close()
    local = ResultCache(tmp_path, "pr-1")
    assert Layered(local, store(repository, "pr-1", ("pr-1", "main"))).get(Kind.CHECKS, "c") == {
        "unit": True
    }
    assert local.get(Kind.CHECKS, "c") == {"unit": True}


def _report(path: Path) -> dict[str, dict[str, Any]]:
    return {s["service"]: s for s in json.loads(path.read_text())["services"]}


def test_a_fresh_clone_replays_every_service_from_the_registry_with_no_engine(
    tmp_path: Path, base_image: str, repository: str
):
    """One runner builds and checks; a fresh clone of the same commit elsewhere, whose engine
    cannot even be reached, gets every verified result from the registry: nothing is built."""
    scope = f"rs-{uuid.uuid4().hex[:8]}"  # cache volumes and results no earlier run wrote
    repo = tiny_repo(tmp_path / "a", {"alpha": "print('a')", "beta": "print('b')"})
    shared = {"PIPELINE_CACHE_REGISTRY": repository}
    first = pipeline_in(
        repo, base_image, "build", "--report", str(tmp_path / "a.json"), scope=scope, env=shared
    )
    assert first.returncode == 0, first.stderr[-3000:]
    built = _report(tmp_path / "a.json")
    assert {s["status"] for s in built.values()} == {"ok"}
    assert not any(s["cached"] for s in built.values())

    clone = tmp_path / "b"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    # a clone of the same repository: its remote, named in the images' source label
    git(clone, "remote", "set-url", "origin", git(repo, "remote", "get-url", "origin"))
    assert not (clone / ".pipeline").exists()
    assert git(clone, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")
    nowhere = {**shared, "_EXPERIMENTAL_DAGGER_RUNNER_HOST": "unix:///nonexistent/engine.sock"}
    second = pipeline_in(
        clone, base_image, "build", "--report", str(tmp_path / "b.json"), scope=scope, env=nowhere
    )
    assert second.returncode == 0, second.stderr[-3000:]
    replayed = _report(tmp_path / "b.json")
    assert all(s["cached"] for s in replayed.values()), replayed
    for name, result in built.items():
        assert replayed[name]["image"]["digest"] == result["image"]["digest"]
        assert replayed[name]["tests"] == result["tests"]
    said = [json.loads(x) for x in second.stderr.splitlines() if '"cache_registry"' in x]
    assert said and said[-1]["found"] >= len(built), second.stderr[-2000:]

    # a pull request's clone reads main's scope when its own has nothing, and never writes it
    pr = pipeline_in(
        clone,
        base_image,
        "build",
        "--report",
        str(tmp_path / "c.json"),
        scope=f"{scope}-pr",
        env={**nowhere, "PIPELINE_FALLBACK_SCOPE": scope, "PIPELINE_CACHE_REGISTRY_MODE": "read"},
    )
    shutil.rmtree(clone / ".pipeline", ignore_errors=True)
    assert pr.returncode == 0, pr.stderr[-3000:]
    assert all(s["cached"] for s in _report(tmp_path / "c.json").values())


def test_a_changed_service_is_rebuilt_not_replayed(
    tmp_path: Path, base_image: str, repository: str
):
    """A registry entry answers only its own inputs: a clone whose service changed builds it."""
    scope = f"rs-{uuid.uuid4().hex[:8]}"
    repo = tiny_repo(tmp_path / "a", {"alpha": "print('a')"})
    shared = {"PIPELINE_CACHE_REGISTRY": repository}
    assert pipeline_in(repo, base_image, "build", scope=scope, env=shared).returncode == 0
    clone = tmp_path / "b"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    git(clone, "remote", "set-url", "origin", git(repo, "remote", "get-url", "origin"))
    (clone / "services" / "alpha" / "main.py").write_text("NAME = 'changed'\n")
    done = pipeline_in(
        clone, base_image, "build", "--report", str(tmp_path / "b.json"), scope=scope, env=shared
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _report(tmp_path / "b.json")["alpha"]["cached"] is False


def test_a_runs_entries_share_one_push_of_their_config(repository: str):
    """A run's entries, written side by side, push the empty config they all name once: every
    writer that pushed it too could race another's upload of it, and the registry then refused
    a manifest naming it (400 digest invalid), which stopped the run's writes."""
    host, path = repository.split("/", 1)
    config = "sha256:" + hashlib.sha256(b"{}").hexdigest()
    with FaultyRegistry(host) as proxy:
        writer = store(f"{proxy.address}/{path}", "main", ("main",))
        for n in range(8):
            writer.put(Kind.RESULTS, f"k{n}", {**VALUE, "n": n})
        writer.close()
        asked = [p for m, p, _ in proxy.log if m == "HEAD" and p.endswith(config)]
    assert writer.written == 8
    assert len(asked) == 1
    reader = store(repository, "main", ("main",))
    assert [reader.get(Kind.RESULTS, f"k{n}") for n in range(8)] == [
        ({**VALUE, "n": n}, "main") for n in range(8)
    ]


def test_a_runs_entries_are_asked_at_once_and_each_only_once(repository: str):
    """prefetch asks the registry for every entry side by side; later lookups, hits and
    misses alike, are answered without another request."""
    host, path = repository.split("/", 1)
    writer = store(repository, "main", ("main",))
    for n in range(5):
        writer.put(Kind.RESULTS, f"hit{n}", {**VALUE, "n": n})
    writer.close()
    with FaultyRegistry(host) as proxy:
        reader = store(f"{proxy.address}/{path}", "pr-1", ("pr-1", "main"))
        wanted = [(Kind.RESULTS, f"hit{n}") for n in range(5)]
        wanted += [(Kind.CHECKS, f"miss{n}") for n in range(5)]
        reader.prefetch(wanted)
        asked = len(proxy.log)
        for kind, key in wanted:
            answer = reader.get(kind, key)
            assert (answer is None) == key.startswith("miss")
        assert reader.get(Kind.RESULTS, "hit3") == ({**VALUE, "n": 3}, "main")
        assert len(proxy.log) == asked  # nothing asked twice
    # each hit: its manifest in pr-1 (absent), then in main, then its blob; each miss: two
    assert asked == 5 * 3 + 5 * 2
