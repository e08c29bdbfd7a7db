"""The result cache against the real engine: an unchanged service replays without engine work,
a changed input rebuilds exactly what it alters, --no-cache and damaged entries rebuild, and
layers are the same whether built cold or from the engine's cache."""

from __future__ import annotations

import json
import tarfile
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

from pipeline.edges.registry import Reference, resolve
from tests.conftest import copy_example, pipeline_in

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]


def build(repo: Path, base: str, scope: str, *args: str) -> tuple[dict[str, Any], str]:
    """``build`` through the CLI; the report's services by name, and the log."""
    report = repo.parent / f"report-{time.time_ns()}.json"
    done: subprocess.CompletedProcess[str] = pipeline_in(
        repo, base, "build", "--report", str(report), *args, scope=scope
    )
    assert done.returncode == 0, done.stderr
    services = {s["service"]: s for s in json.loads(report.read_text())["services"]}
    return services, done.stderr


def started(log: str) -> set[str]:
    return {
        json.loads(line)["service"]
        for line in log.splitlines()
        if line.startswith("{") and json.loads(line)["event"] == "build_started"
    }


@pytest.fixture
def scope() -> str:
    return f"tests-rc-{time.time_ns()}"


def test_unchanged_services_replay_and_a_change_rebuilds_only_its_service(
    tmp_path: Path, base_image: str, scope: str
):
    repo = copy_example(tmp_path / "repo", services=("users", "worker"))
    first, log = build(repo, base_image, scope)
    assert started(log) == {"users", "worker"}
    assert not any(s["cached"] for s in first.values())

    again, log = build(repo, base_image, scope)
    assert started(log) == set()  # no engine work at all
    for name in ("users", "worker"):
        assert again[name]["cached"] is True
        assert again[name]["status"] == "ok"
        assert again[name]["image"] == first[name]["image"]
        assert again[name]["tests"] == first[name]["tests"]

    app = repo / "services/users/users/app.py"
    app.write_text(app.read_text() + "\n# edited\n")
    edited, log = build(repo, base_image, scope)
    assert started(log) == {"users"}
    assert '"rebuild_needed"' in log and "services/users/users/app.py" in log
    assert edited["worker"]["cached"] is True
    assert edited["users"]["cached"] is False
    assert edited["users"]["image"]["digest"] != first["users"]["image"]["digest"]
    assert edited["users"]["tests"] == {"unit": True, "smoke": True, "health": True}

    fresh, log = build(repo, base_image, scope, "--no-cache")
    assert started(log) == {"users", "worker"}
    assert not any(s["cached"] for s in fresh.values())


def test_a_commit_elsewhere_replays_and_a_new_stamp_reuses_checks(
    tmp_path: Path, base_image: str, scope: str
):
    """A commit that changes no input of an image leaves the image as it was: replayed, same
    digest. A commit that changes an input back to what it was gives the image a new stamp
    (that commit) over the same content: built anew, its checks' answers reused."""
    from tests.conftest import git

    def commit(message: str) -> None:
        git(repo, "add", "-A")
        git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", message)

    repo = copy_example(tmp_path / "repo", services=("worker",))
    first, _ = build(repo, base_image, scope)
    (repo / "NOTES.md").write_text("no image reads this\n")
    commit("notes")
    elsewhere, log = build(repo, base_image, scope)
    assert started(log) == set()
    assert elsewhere["worker"]["cached"] is True
    assert elsewhere["worker"]["image"]["digest"] == first["worker"]["image"]["digest"]

    source = repo / "services/worker/worker/__init__.py"
    original = source.read_text()
    source.write_text(original + "# for a while\n")
    commit("edit")
    source.write_text(original)
    commit("undo")
    second, log = build(repo, base_image, scope)
    assert started(log) == {"worker"}  # a new stamp: the image is made anew
    assert second["worker"]["image"]["digest"] != first["worker"]["image"]["digest"]
    assert second["worker"]["reused_checks"] == ["smoke", "unit"]
    assert second["worker"]["tests"] == {"unit": True, "smoke": True}


def test_a_damaged_entry_is_ignored_with_a_warning(tmp_path: Path, base_image: str, scope: str):
    repo = copy_example(tmp_path / "repo", services=("worker",))
    build(repo, base_image, scope, "--no-test")
    entries = list((repo / ".pipeline/cache" / scope / "results").glob("*.json"))
    assert len(entries) == 1
    entries[0].write_text("{ not json")
    again, log = build(repo, base_image, scope, "--no-test")
    assert '"cache_entry_ignored"' in log
    assert again["worker"]["status"] == "ok"
    assert again["worker"]["cached"] is False
    # the cache never shows as a change to the repository
    assert (repo / ".pipeline/.gitignore").read_text().splitlines()[-1] == "*"


def test_a_base_pinned_by_digest_is_the_same_input_as_its_tag(
    tmp_path: Path, base_image: str, scope: str
):
    pinned = resolve(base_image)
    assert pinned is not None
    assert pinned.startswith(base_image.rsplit(":", 1)[0] + "@sha256:")
    repo = copy_example(tmp_path / "repo", services=("worker",))
    build(repo, base_image, scope, "--no-test")
    again, log = build(repo, pinned, scope, "--no-test")
    assert started(log) == set()
    assert again["worker"]["cached"] is True


def _relabelled(ref: str) -> str:
    """A new tag of ``ref`` with the same file system and another config (a label): a base
    image digest this engine has never seen, so nothing of it can come from its cache."""
    parsed = Reference.parse(ref)
    api = f"{parsed.endpoint}/v2/{parsed.repository}"
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    with urllib.request.urlopen(
        urllib.request.Request(f"{api}/manifests/{parsed.tag}", headers=accept)
    ) as r:
        manifest = json.loads(r.read())
        media_type = r.headers["Content-Type"]
    with urllib.request.urlopen(f"{api}/blobs/{manifest['config']['digest']}") as r:
        config = json.loads(r.read())
    config.setdefault("config", {}).setdefault("Labels", {})["test.fresh"] = str(time.time_ns())
    blob = json.dumps(config).encode()
    import hashlib

    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with urllib.request.urlopen(
        urllib.request.Request(f"{api}/blobs/uploads/", method="POST")
    ) as r:
        location = r.headers["Location"]
    upload = f"{location}{'&' if '?' in location else '?'}digest={digest}"
    if upload.startswith("/"):
        upload = parsed.endpoint + upload
    put = urllib.request.Request(upload, data=blob, method="PUT")
    put.add_header("Content-Type", "application/octet-stream")
    urllib.request.urlopen(put).close()
    manifest["config"] = {**manifest["config"], "digest": digest, "size": len(blob)}
    tag = f"fresh-{time.time_ns()}"
    body = json.dumps(manifest).encode()
    put = urllib.request.Request(f"{api}/manifests/{tag}", data=body, method="PUT")
    put.add_header("Content-Type", media_type)
    urllib.request.urlopen(put).close()
    return f"{ref.rsplit(':', 1)[0]}:{tag}"


def _layer_files(tarball: str, digest: str) -> set[str]:
    import gzip
    import io

    with tarfile.open(tarball) as image:
        member = image.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
        assert member is not None
        data = member.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
        return {m.name.lstrip("./") for m in layer.getmembers() if not m.isdir()}


def test_layers_are_the_same_cold_or_warm_and_a_service_layer_holds_only_its_own(
    tmp_path: Path, base_image: str
):
    """Cold: a base digest and a cache scope the engine has never seen, so every install
    really runs; warm: the engine's cache as it is. Every layer above the base is equal."""
    if base_image.count(":") < 2 and not base_image.startswith("localhost"):
        pytest.skip("needs the local registry's base image (scripts/engine up)")
    repo = copy_example(tmp_path / "repo", services=("users", "gateway"))
    warm_out, cold_out = tmp_path / "warm", tmp_path / "cold"
    done = pipeline_in(
        repo,
        base_image,
        "export",
        "--no-test",
        "--out",
        str(warm_out),
        "--report",
        str(tmp_path / "warm.json"),
        scope="tests",
    )
    assert done.returncode == 0, done.stderr
    fresh = _relabelled(base_image)
    done = pipeline_in(
        repo,
        fresh,
        "export",
        "--no-test",
        "--out",
        str(cold_out),
        "--report",
        str(tmp_path / "cold.json"),
        scope=f"tests-cold-{time.time_ns()}",
    )
    assert done.returncode == 0, done.stderr
    warm = {s["service"]: s for s in json.loads((tmp_path / "warm.json").read_text())["services"]}
    cold = {s["service"]: s for s in json.loads((tmp_path / "cold.json").read_text())["services"]}
    for name in ("users", "gateway"):
        assert cold[name]["image"]["layers"] == warm[name]["image"]["layers"], name
        assert cold[name]["image"]["digest"] != warm[name]["image"]["digest"]  # the base config
    # gateway = users' layers (tier) + its own dependency layer + its source layer
    users, gateway = warm["users"]["image"]["layers"], warm["gateway"]["image"]["layers"]
    assert gateway[: len(users) - 1] == users[:-1]
    own = _layer_files(str(warm_out / "gateway.tar"), gateway[-2])
    tier = _layer_files(str(warm_out / "gateway.tar"), users[-2])
    assert own, "gateway's dependency layer is empty"
    assert any("site-packages/httpx/" in f for f in own)
    assert not own & tier, f"the service layer repeats tier files: {sorted(own & tier)[:5]}"
