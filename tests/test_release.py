"""Publishing as one release, against the real engine and the loopback registry, directly or
through a proxy that injects faults: immutable tags first, moving tags only when every
service passed and pushed; exports whole and only of images that passed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import tracemalloc
import urllib.parse
from typing import TYPE_CHECKING

import anyio
import pytest

from pipeline.edges import publish, referrers
from pipeline.edges import registry as policy
from pipeline.supply import kinds, ocilayout
from tests.conftest import git, pipeline_in, skopeo, tiny_repo
from tests.faultyregistry import Fault, FaultyRegistry
from tests.test_ocilayout import COMMIT, layout

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]


def _host(registry: str) -> str:
    return registry.split("/", 1)[0]


def _tags(ref: str) -> list[str]:
    """The image tags of a repository in the loopback registry ([] when it has none); the
    sha256-<digest> tags that index attestations (the referrers fallback) are not images."""
    try:
        tags = skopeo("list-tags", "--tls-verify=false", f"docker://{ref}")["Tags"]
    except subprocess.CalledProcessError:
        return []
    return sorted(t for t in tags if not t.startswith("sha256-"))


def _services(report: Path) -> dict[str, dict]:
    return {s["service"]: s for s in json.loads(report.read_text())["services"]}


def test_failed_service_holds_every_moving_tag(tmp_path: Path, base_image: str, registry: str):
    repo = tiny_repo(tmp_path / "repo", {"alpha": "print(1)", "beta": "raise SystemExit(3)"})
    head = git(repo, "rev-parse", "HEAD")[:12]
    namespace, report = f"{registry}/t{time.time_ns()}", tmp_path / "report.json"
    done = pipeline_in(
        repo, base_image, "publish", "--registry", namespace, "--report", str(report)
    )
    assert done.returncode == 1, done.stderr
    # alpha passed: pushed under its commit; beta failed its smoke test: pushed nowhere
    assert _tags(f"{namespace}/alpha") == [head]
    assert _tags(f"{namespace}/beta") == []
    data = json.loads(report.read_text())
    assert data["release"]["reason"] == "beta failed"
    assert sorted(data["release"]["held"]) == sorted(
        f"{namespace}/{s}:{t}" for s in ("alpha", "beta") for t in ("branch-main", "latest")
    )
    assert data["release"]["moved"] == []
    assert "moving tags left where they were (beta failed)" in done.stdout


def test_passing_registry_failures_are_retried(tmp_path: Path, base_image: str, registry: str):
    repo = tiny_repo(tmp_path / "repo", {"alpha": "print(1)"})
    head = git(repo, "rev-parse", "HEAD")[:12]
    # more failures than the engine retries within one push: the pipeline's retries end them
    faults = [Fault("PUT", "/alpha/manifests/", status=503, times=5)]
    with FaultyRegistry(_host(registry), faults=faults) as proxy:
        namespace, report = f"{proxy.address}/t{time.time_ns()}", tmp_path / "report.json"
        done = pipeline_in(
            repo, base_image, "publish", "--registry", namespace, "--report", str(report)
        )
    assert done.returncode == 0, (done.stdout, proxy.errors)
    assert faults[0].hits == 5
    assert "push_retried" in done.stderr
    pushed = _services(report)["alpha"]["published"]
    assert [ref.split("@")[0] for ref in pushed] == [
        f"{namespace}/alpha:{t}" for t in (head, "branch-main", "latest")
    ]
    assert len({ref.split("@")[1] for ref in pushed}) == 1


def _blob_arrivals(log: list[tuple[str, str, str]], path: str) -> dict[str, list[str]]:
    """How each blob reached ``path`` (a repository) in the proxy's log, by digest: "sent"
    for the PUT of its bytes, "mounted" for a cross-repository mount the registry did,
    "refused" for one it did not."""
    arrivals: dict[str, list[str]] = {}
    for method, request, outcome in log:
        url = urllib.parse.urlsplit(request)
        query = urllib.parse.parse_qs(url.query)
        if not url.path.startswith(f"/v2/{path}/blobs/uploads/") or outcome == "401":
            continue  # another repository's, or a token's challenge (asked again with one)
        if method == "PUT" and outcome == "201":
            arrivals.setdefault(query["digest"][0], []).append("sent")
        elif method == "POST" and "mount" in query:
            how = "mounted" if outcome == "201" else "refused"
            arrivals.setdefault(query["mount"][0], []).append(how)
    return arrivals


def test_a_layer_shared_by_services_crosses_to_the_registry_once(
    tmp_path: Path, base_image: str, registry: str
):
    repo = tiny_repo(tmp_path / "repo", dict.fromkeys(("alpha", "beta", "gamma"), "print(1)"))
    # gamma's repository as on a registry without cross-repository mounts: each mount refused
    faults = [Fault("POST", r"/gamma/blobs/uploads/\?mount=", status=404)]
    with FaultyRegistry(_host(registry), faults=faults) as proxy:
        namespace, report = f"{proxy.address}/t{time.time_ns()}", tmp_path / "report.json"
        done = pipeline_in(
            repo, base_image, "publish", "--registry", namespace, "--report", str(report)
        )
    assert done.returncode == 0, (done.stdout, done.stderr[-3000:], proxy.errors)
    layers = {s: v["image"]["layers"] for s, v in _services(report).items()}
    shared = set(layers["alpha"]) & set(layers["beta"]) & set(layers["gamma"])
    assert len(shared) >= 2  # the base image's layer and the base tier's venv
    path = namespace.split("/", 1)[1]
    arrived = {s: _blob_arrivals(proxy.log, f"{path}/{s}") for s in layers}
    for digest in shared:
        # alpha and beta: the bytes sent at most once between them, else mounted
        ways = arrived["alpha"].get(digest, []) + arrived["beta"].get(digest, [])
        assert sorted(w for w in ways if w != "refused") in (
            ["mounted", "mounted"],
            ["mounted", "sent"],
        ), (digest, ways)
        # gamma: sent, its mount refused if another repository had the layer first
        assert arrived["gamma"][digest][-1] == "sent", (digest, arrived["gamma"][digest])
    client = referrers.Client(_host(registry))  # every image whole in its own repository
    for service, digests in layers.items():
        assert all(client.has_blob(f"{path}/{service}", d) for d in digests), service


def test_a_layer_crosses_to_the_registry_as_it_is_read_never_held_whole(
    tmp_path: Path, registry: str
):
    """An ML tier's layer of hundreds of MB, or gigabytes, is checked against its digest and
    sent in chunks: the publishing process never holds it whole."""
    tarball = layout(tmp_path / "image.tar", COMMIT, layers=[os.urandom(32 << 20)])
    image = ocilayout.read(tarball)
    client = referrers.Client(_host(registry))
    path = f"{registry.split('/', 1)[1]}/t{time.time_ns()}/big"
    tracemalloc.start()
    try:
        publish.upload(client, path, tarball, publish.Uploads())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak / 2**20:.1f} MiB held at once"
    (layer,) = image.layers
    assert client.has_blob(path, layer["digest"])
    assert client.has_blob(path, json.loads(image.manifest)["config"]["digest"])


def test_an_images_layers_go_side_by_side(tmp_path: Path, registry: str):
    """While one layer's upload waits on the registry, the image's other layers are sent."""
    layers = [os.urandom(1 << 16) for _ in range(3)]
    tarball = layout(tmp_path / "image.tar", COMMIT, layers=layers)
    held, *others = [hashlib.sha256(layer).hexdigest() for layer in layers]
    path = f"{registry.split('/', 1)[1]}/t{time.time_ns()}/layers"
    failed: list[BaseException] = []

    def push(address: str) -> None:
        try:
            publish.upload(referrers.Client(address), path, tarball, publish.Uploads())
        except Exception as exc:  # noqa: BLE001 - the held upload fails once let go
            failed.append(exc)

    def sent(proxy: FaultyRegistry) -> set[str]:
        return {d for d in others for m, p, o in proxy.log if m == "PUT" and d in p and o == "201"}

    with FaultyRegistry(_host(registry), faults=[Fault("PUT", held, "hold")]) as proxy:
        pusher = threading.Thread(target=push, args=(proxy.address,), daemon=True)
        pusher.start()
        deadline = time.monotonic() + 30
        while sent(proxy) != set(others) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sent(proxy) == set(others), proxy.log
        assert pusher.is_alive()  # the held layer's upload is still waiting
    pusher.join(60)
    assert failed, "the held upload cannot have succeeded"


def _upload_through(proxy: FaultyRegistry, registry: str, tarball: Path) -> str:
    """The image of ``tarball`` uploaded through ``proxy`` to a new repository of the loopback
    registry; the repository, checked to hold every blob of the image."""
    path = f"{registry.split('/', 1)[1]}/t{time.time_ns()}/blobs"
    image = publish.upload(referrers.Client(proxy.address), path, tarball, publish.Uploads())
    direct = referrers.Client(_host(registry))
    digests = [str(layer["digest"]) for layer in image.layers]
    digests.append(json.loads(image.manifest)["config"]["digest"])
    assert all(direct.has_blob(path, digest) for digest in digests)
    return path


def test_an_images_documents_go_side_by_side_and_share_what_they_can(tmp_path: Path, registry: str):
    """An image's SBOM and provenance go up as two artifacts referring to it, side by side;
    what they share crosses once (the image's manifest, the empty config, whether the registry
    lists referrers, and on a registry without that the fallback index, written with both):
    on a far registry, 8 round trips one after another per image instead of 18."""
    tarball = layout(tmp_path / "image.tar", COMMIT)
    documents = {kind: json.dumps({"kind": kind.name}) for kind in kinds.KINDS}
    image = ocilayout.read(tarball)
    late = Fault("PUT", r"/manifests/sha256:", "late", delay=0.5)  # each document's manifest
    with FaultyRegistry(_host(registry), faults=[late]) as proxy:
        path = _upload_through(proxy, registry, tarball)
        namespace, service = path.rsplit("/", 1)
        digest = referrers.Client(_host(registry)).put_manifest(
            path, "v1", image.manifest, image.media_type
        )
        before = len(proxy.log)
        target = publish.Target(f"{proxy.address}/{namespace}", None)
        refs = anyio.run(publish.attach, service, target, digest, documents)
        sent = proxy.log[before:]

    def count(method: str, part: str) -> int:
        return sum(1 for m, p, _ in sent if m == method and part in urllib.parse.unquote(p))

    assert count("GET", f"/manifests/{digest}") == 1  # the subject, read for both documents
    assert count("POST", "/blobs/uploads/") == 3  # two documents and one empty config
    assert count("GET", f"/referrers/{digest}") == 1
    fallback = f"/manifests/{digest.replace(':', '-')}"
    assert (count("GET", fallback), count("PUT", fallback)) == (1, 1)  # the loopback registry's
    assert late.hits == 2
    assert late.most == 2  # the two documents' manifests were in flight together
    listed = referrers.Client(_host(registry)).referrers(path, digest)
    assert sorted(d["artifactType"] for d in listed) == sorted(k.media_type for k in kinds.KINDS)
    assert {ref.rsplit("@", 1)[1] for ref in refs.values()} == {d["digest"] for d in listed}


def test_documents_of_one_payload_upload_it_once(tmp_path: Path, registry: str):
    """Two documents with the same bytes, attached side by side, upload them once: two uploads
    of one blob to one repository at once could have a manifest naming it refused."""
    tarball = layout(tmp_path / "image.tar", COMMIT)
    image = ocilayout.read(tarball)
    same = [referrers.Document(t, b'{"same": true}', "application/json") for t in ("a/x", "a/y")]
    with FaultyRegistry(_host(registry)) as proxy:
        path = _upload_through(proxy, registry, tarball)
        digest = referrers.Client(_host(registry)).put_manifest(
            path, "v1", image.manifest, image.media_type
        )
        before = len(proxy.log)
        made = referrers.Client(proxy.address).attach_all(path, digest, same)
        uploads = [p for m, p, _ in proxy.log[before:] if m == "POST" and "/blobs/uploads/" in p]
    assert len(uploads) == 2  # the empty config and the one payload
    listed = referrers.Client(_host(registry)).referrers(path, digest)
    assert sorted(d["artifactType"] for d in listed) == ["a/x", "a/y"]
    assert sorted(made) == sorted(d["digest"] for d in listed)


@pytest.mark.parametrize(
    ("fault", "answers"),
    [
        # the registry commits after the client's wait for its answer ran out
        (Fault("PUT", "", "late", delay=3.0, times=1), ["201"]),
        # a gateway in front of the registry answers 504 while the registry commits
        (Fault("PUT", "", "gateway", status=504, times=1), ["201", "gateway 504"]),
        # the registry fails before it takes anything: the upload begins again
        (Fault("PUT", "", "status", status=503, times=1), ["503", "201"]),
    ],
    ids=["late", "gateway", "failed"],
)
def test_a_blobs_commit_is_never_sent_twice(
    tmp_path: Path, registry: str, monkeypatch: pytest.MonkeyPatch, fault: Fault, answers: list
):
    """A blob upload's last request is answered once the registry has committed the blob,
    which on object storage copies it: a multi-GB layer's answer can come after the client
    stopped waiting, or a gateway can give up first. The blob is then found in the repository,
    not sent again to the upload its commit consumed; an upload the registry failed is begun
    again."""
    monkeypatch.setattr(policy, "READ_TIMEOUT", 1.0)
    layers = [os.urandom(1 << 16) for _ in range(2)]
    tarball = layout(tmp_path / "image.tar", COMMIT, layers=layers)
    slow = hashlib.sha256(layers[0]).hexdigest()
    fault.path = f"digest=sha256%3A{slow}"
    with FaultyRegistry(_host(registry), faults=[fault]) as proxy:
        _upload_through(proxy, registry, tarball)
    assert [o for m, p, o in proxy.log if m == "PUT" and slow in p] == answers


def test_a_big_blobs_commit_is_waited_for_longer(
    tmp_path: Path, registry: str, monkeypatch: pytest.MonkeyPatch
):
    """The wait for a commit's answer grows with the blob: a commit that takes longer than a
    small blob's wait, but not than this one's, is answered, with no look for the blob."""
    monkeypatch.setattr(policy, "READ_TIMEOUT", 1.0)
    monkeypatch.setattr(policy, "COMMIT_RATE", 1 << 18)  # 1 MiB: 4 s more
    layer = os.urandom(1 << 20)
    tarball = layout(tmp_path / "image.tar", COMMIT, layers=[layer])
    big = hashlib.sha256(layer).hexdigest()
    fault = Fault("PUT", f"digest=sha256%3A{big}", "late", delay=2.5)
    with FaultyRegistry(_host(registry), faults=[fault]) as proxy:
        _upload_through(proxy, registry, tarball)
    # looked for once before the upload (not there), then sent once and answered
    assert [(m, o) for m, p, o in proxy.log if big in p] == [("HEAD", "404"), ("PUT", "201")]


def test_failing_pushes_leave_moving_tags_alone(tmp_path: Path, base_image: str, registry: str):
    repo = tiny_repo(tmp_path / "repo", {"alpha": "print(1)", "beta": "print(2)"})
    head = git(repo, "rev-parse", "HEAD")[:12]
    faults = [Fault("PUT", "/beta/manifests/", status=500)]
    with FaultyRegistry(_host(registry), faults=faults) as proxy:
        namespace, report = f"{proxy.address}/t{time.time_ns()}", tmp_path / "report.json"
        done = pipeline_in(
            repo, base_image, "publish", "--registry", namespace, "--report", str(report)
        )
    assert done.returncode == 1
    beta = _services(report)["beta"]
    assert beta["status"] == "failed"
    assert beta["reason"].startswith(f"publish: {namespace}/beta:{head}: gave up after 3 attempts")
    stored = namespace.replace(proxy.address, _host(registry))
    assert _tags(f"{stored}/alpha") == [head]  # immutable only: the release did not happen
    assert _tags(f"{stored}/beta") == []
    assert "moving tags left where they were (beta failed)" in done.stdout


def _digest(ref: str) -> str | None:
    """The manifest digest a tag names in the loopback registry, or None without the tag."""
    host, _, rest = ref.partition("/")
    repository, _, tag = rest.rpartition(":")
    found = referrers.Client(host).find_manifest(repository, tag)
    return found[2] if found else None


def _new_commit(repo: Path) -> str:
    """Both services changed and committed: every image of the next run is new."""
    for name in ("alpha", "beta"):
        (repo / "services" / name / "main.py").write_text(f"NAME = {name!r}  # v2\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "v2")
    return git(repo, "rev-parse", "HEAD")[:12]


MOVING = [(s, t) for s in ("alpha", "beta") for t in ("branch-main", "latest")]


@pytest.mark.parametrize(
    "fault",
    [
        Fault("PUT", r"/beta/manifests/latest$", action="reset"),
        Fault("PUT", r"/beta/manifests/latest$", status=429),
    ],
    ids=["dropped", "429"],
)
def test_a_failure_while_moving_tags_puts_every_moving_tag_back(
    tmp_path: Path, base_image: str, registry: str, fault: Fault
):
    repo = tiny_repo(tmp_path / "repo", {"alpha": "print(1)", "beta": "print(2)"})
    namespace = f"{registry}/t{time.time_ns()}"
    first = pipeline_in(repo, base_image, "publish", "--registry", namespace)
    assert first.returncode == 0, first.stderr
    before = {(s, t): _digest(f"{namespace}/{s}:{t}") for s, t in MOVING}
    assert None not in before.values()
    head = _new_commit(repo)
    with FaultyRegistry(_host(registry), faults=[fault]) as proxy:
        proxied, report = namespace.replace(_host(registry), proxy.address), tmp_path / "r.json"
        done = pipeline_in(
            repo, base_image, "publish", "--registry", proxied, "--report", str(report)
        )
    assert done.returncode == 1, done.stdout + done.stderr
    # the failure came in the moving-tag phase, after other moving tags had moved
    assert fault.hits >= 1
    moved_first = [p for m, p, s in proxy.log if m == "PUT" and s == "201" and "/manifests/" in p]
    assert any(p.endswith("/alpha/manifests/latest") for p in moved_first), proxy.log
    # ... and every moving tag is where it was; the new images kept their commit tags
    assert {(s, t): _digest(f"{namespace}/{s}:{t}") for s, t in MOVING} == before
    for name in ("alpha", "beta"):
        assert _digest(f"{namespace}/{name}:{head}") not in (None, before[name, "latest"])
    release = json.loads(report.read_text())["release"]
    assert release["moved"] == []
    assert release["left"] == []
    assert sorted(release["held"]) == sorted(f"{proxied}/{s}:{t}" for s, t in MOVING)
    assert release["reason"].startswith(f"{proxy.address}/{proxied.split('/', 1)[1]}/beta:latest")
    assert "moving tags left where they were" in done.stdout


def test_a_first_release_that_fails_names_the_new_tags_it_could_not_remove(
    tmp_path: Path, base_image: str, registry: str
):
    """No moving tag existed: a failure part-way cannot put back a tag this registry does not
    let anyone delete (distribution 2.x answers 400), so the release names each one left."""
    repo = tiny_repo(tmp_path / "repo", {"alpha": "print(1)", "beta": "print(2)"})
    head = git(repo, "rev-parse", "HEAD")[:12]
    fault = Fault("PUT", r"/beta/manifests/latest$", action="reset")
    with FaultyRegistry(_host(registry), faults=[fault]) as proxy:
        namespace, report = f"{proxy.address}/t{time.time_ns()}", tmp_path / "r.json"
        done = pipeline_in(
            repo, base_image, "publish", "--registry", namespace, "--report", str(report)
        )
    assert done.returncode == 1, done.stdout + done.stderr
    stored = namespace.replace(proxy.address, _host(registry))
    release = json.loads(report.read_text())["release"]
    assert release["moved"] == []
    left = {ref.split(" ", 1)[0]: ref for ref in release["left"]}
    now = {f"{namespace}/{s}:{t}" for s, t in MOVING if _digest(f"{stored}/{s}:{t}")}
    assert set(left) == now == {f"{namespace}/{s}" for s in ("alpha:branch-main", "alpha:latest",
                                                              "beta:branch-main")}  # fmt: skip
    assert all("does not allow deleting a tag; fix: delete it" in text for text in left.values())
    assert _tags(f"{stored}/beta") == sorted([head, "branch-main"])
    assert "NOT put back" in done.stdout


def test_moving_tags_ride_out_passing_429s(tmp_path: Path, base_image: str, registry: str):
    repo = tiny_repo(tmp_path / "repo", {"alpha": "print(1)", "beta": "print(2)"})
    head = git(repo, "rev-parse", "HEAD")[:12]
    fault = Fault("PUT", r"/beta/manifests/latest$", status=429, times=2)
    with FaultyRegistry(_host(registry), faults=[fault]) as proxy:
        namespace = f"{proxy.address}/t{time.time_ns()}"
        done = pipeline_in(repo, base_image, "publish", "--registry", namespace)
    assert done.returncode == 0, done.stdout + done.stderr
    assert fault.hits == 2
    stored = namespace.replace(proxy.address, _host(registry))
    for name in ("alpha", "beta"):
        digest = _digest(f"{stored}/{name}:{head}")
        assert digest is not None
        assert [_digest(f"{stored}/{name}:{t}") for t in ("branch-main", "latest")] == [digest] * 2


def test_moving_tags_move_side_by_side(tmp_path: Path, base_image: str, registry: str):
    """A release's registry requests overlap: with each moving tag's move answered late, the
    moves are in flight together, so a release of many services costs a few round trips. The
    manifests the run pushed are not read back, neither to move the tags nor to attach the
    attestations: a round trip less for each, per image."""
    repo = tiny_repo(tmp_path / "repo", dict.fromkeys(("alpha", "beta", "gamma"), "print(1)"))
    head = git(repo, "rev-parse", "HEAD")[:12]
    late = Fault("PUT", r"/manifests/(branch-main|latest)$", "late", delay=1.0)
    with FaultyRegistry(_host(registry), faults=[late]) as proxy:
        namespace = f"{proxy.address}/t{time.time_ns()}"
        done = pipeline_in(repo, base_image, "publish", "--registry", namespace)
    assert done.returncode == 0, done.stdout + done.stderr
    assert late.hits == 6
    assert late.most > 1
    read_back = [p for m, p, _ in proxy.log if m == "GET" and "/manifests/sha256:" in p]
    assert read_back == []
    stored = namespace.replace(proxy.address, _host(registry))
    for name in ("alpha", "beta", "gamma"):
        digest = _digest(f"{stored}/{name}:{head}")
        assert [_digest(f"{stored}/{name}:{t}") for t in ("branch-main", "latest")] == [digest] * 2


def test_run_killed_mid_publish_moves_no_tag(tmp_path: Path, base_image: str, registry: str):
    repo = tiny_repo(tmp_path / "repo", {"alpha": "print(1)", "beta": "print(2)"})
    head = git(repo, "rev-parse", "HEAD")[:12]
    faults = [Fault("PUT", "/beta/manifests/", action="hold")]
    with FaultyRegistry(_host(registry), faults=faults) as proxy:
        namespace = f"{proxy.address}/t{time.time_ns()}"
        where = ["--project-dir", str(repo), "--base-image", base_image, "--cache-scope", "tests"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "publish", "--registry", namespace, *where],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while faults[0].hits == 0 or not any(
            m == "PUT" and "/alpha/manifests/" in p and s == "201" for m, p, s in proxy.log
        ):
            assert proc.poll() is None, "the run ended before it reached the held push"
            assert time.monotonic() < deadline, proxy.log
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    stored = namespace.replace(proxy.address, _host(registry))
    assert _tags(f"{stored}/alpha") == [head]
    assert _tags(f"{stored}/beta") == []


def _publish_as_ci(
    repo: Path, base_image: str, namespace: str, report: Path, password: str
) -> subprocess.CompletedProcess[str]:
    """``publish`` to ``namespace`` as the user ci with ``password``."""
    user = ["--registry-username", "ci", "--report", str(report)]
    env = {"PIPELINE_REGISTRY_PASSWORD": password}
    return pipeline_in(repo, base_image, "publish", "--registry", namespace, *user, env=env)


def test_publish_to_a_registry_of_scoped_tokens(tmp_path: Path, base_image: str, registry: str):
    """As Docker Hub and GHCR do: each repository's requests need a Bearer token of its own
    scope, from the registry's token endpoint. Three images publish whole, their shared layers
    still cross once (mounted, with a token that may read the repository they come from), and
    no blob's bytes are sent to be refused: a repository's requests carry its token at once."""
    repo = tiny_repo(tmp_path / "repo", dict.fromkeys(("alpha", "beta", "gamma"), "print(1)"))
    with FaultyRegistry(_host(registry), credentials=("ci", "right"), tokens=True) as proxy:
        namespace, report = f"{proxy.address}/t{time.time_ns()}", tmp_path / "report.json"
        done = _publish_as_ci(repo, base_image, namespace, report, "right")
    assert done.returncode == 0, (done.stdout, done.stderr[-3000:], proxy.errors)
    refused = [(m, p) for m, p, outcome in proxy.log if outcome == "401"]
    assert refused  # every repository was challenged
    assert not [p for m, p in refused if m in ("PUT", "PATCH") and "/blobs/" in p], refused
    layers = {s: v["image"]["layers"] for s, v in _services(report).items()}
    shared = set(layers["alpha"]) & set(layers["beta"]) & set(layers["gamma"])
    path = namespace.split("/", 1)[1]
    arrived = {s: _blob_arrivals(proxy.log, f"{path}/{s}") for s in layers}
    for digest in shared:
        ways = [w for s in layers for w in arrived[s].get(digest, [])]
        assert sorted(ways) == ["mounted", "mounted", "sent"], (digest, ways)
    client = referrers.Client(_host(registry))
    for service, digests in layers.items():
        assert all(client.has_blob(f"{path}/{service}", d) for d in digests), service
        assert _tags(f"{_host(registry)}/{path}/{service}") == sorted(
            [git(repo, "rev-parse", "HEAD")[:12], "branch-main", "latest"]
        )


@pytest.mark.parametrize("tokens", [False, True], ids=["basic", "token"])
def test_registry_refusal_names_registry_user_and_fix(
    tmp_path: Path, base_image: str, registry: str, tokens: bool
):
    repo = tiny_repo(tmp_path / "repo", {"alpha": "print(1)"})
    with FaultyRegistry(_host(registry), credentials=("ci", "right"), tokens=tokens) as proxy:
        namespace, report = f"{proxy.address}/t{time.time_ns()}", tmp_path / "report.json"
        done = _publish_as_ci(repo, base_image, namespace, report, "wrong")
    assert done.returncode == 1
    reason = _services(report)["alpha"]["reason"]
    assert reason.startswith(
        f"publish: registry {proxy.address} refused user 'ci' (401 Unauthorized); fix: set "
        "PIPELINE_REGISTRY_USERNAME"
    ), reason
    assert "wrong" not in done.stdout + done.stderr + report.read_text()


def test_dirty_tier_input_publishes_only_the_dirty_commit_tag(
    tmp_path: Path, base_image: str, registry: str
):
    repo = tiny_repo(tmp_path / "repo", {"alpha": "print(1)"})
    head = git(repo, "rev-parse", "HEAD")
    req = repo / "requirements/base.txt"
    req.write_text(req.read_text() + "# uncommitted\n")  # outside every service folder
    namespace, report = f"{registry}/t{time.time_ns()}", tmp_path / "report.json"
    done = pipeline_in(
        repo, base_image, "publish", "--registry", namespace, "--report", str(report)
    )
    assert done.returncode == 0, done.stderr
    assert _tags(f"{namespace}/alpha") == [f"{head[:12]}-dirty"]
    labels = skopeo(
        "inspect", "--tls-verify=false", f"docker://{namespace}/alpha:{head[:12]}-dirty"
    )
    assert labels["Labels"]["org.opencontainers.image.version"] == f"{head[:12]}-dirty"
    assert json.loads(report.read_text())["release"]["held"] == []


def test_outside_git_publishes_the_given_version_only(
    tmp_path: Path, base_image: str, registry: str
):
    repo = tiny_repo(tmp_path / "repo", {"alpha": "print(1)"})
    subprocess.run(["rm", "-rf", str(repo / ".git")], check=True)
    namespace = f"{registry}/t{time.time_ns()}"
    refused = pipeline_in(repo, base_image, "publish", "--registry", namespace)
    assert refused.returncode == 2
    assert "is not a git checkout" in refused.stderr
    assert "--version" in refused.stderr
    assert _tags(f"{namespace}/alpha") == []
    done = pipeline_in(repo, base_image, "publish", "--registry", namespace, "--version", "1.4.2")
    assert done.returncode == 0, done.stderr
    assert "no_git_revision" in done.stderr
    assert _tags(f"{namespace}/alpha") == ["1.4.2"]
    image = skopeo("inspect", "--tls-verify=false", f"docker://{namespace}/alpha:1.4.2")
    assert image["Labels"]["org.opencontainers.image.version"] == "1.4.2"
    assert "org.opencontainers.image.source" not in image["Labels"]
    assert not image["Labels"]["org.opencontainers.image.created"].startswith("1970")


def test_exports_are_whole_and_only_of_passing_images(tmp_path: Path, base_image: str):
    repo = tiny_repo(tmp_path / "repo", {"alpha": "print(1)", "beta": "raise SystemExit(3)"})
    out = tmp_path / "out"
    out.mkdir()
    (out / "beta.tar").write_text("an earlier run's\n")

    def export(i: int) -> tuple[subprocess.Popen[bytes], Path]:
        where = ["--project-dir", str(repo), "--base-image", base_image, "--cache-scope", "tests"]
        log = tmp_path / f"run{i}.log"
        with log.open("wb") as sink:
            run = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pipeline",
                    "export",
                    "--out",
                    str(out),
                    "--report",
                    str(tmp_path / f"report{i}.json"),
                    "--no-cache",
                    *where,
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        return run, log

    # two runs into one folder at once: neither sees the other's partial files
    runs = [export(i) for i in range(2)]
    codes = [run.wait() for run, _ in runs]
    assert codes == [1, 1], "\n\n".join(log.read_text()[-6000:] for _, log in runs)
    assert sorted(p.name for p in out.iterdir()) == [
        "alpha.cdx.json",
        "alpha.provenance.json",
        "alpha.tar",
        "beta.tar",
    ]
    assert (out / "beta.tar").read_text() == "an earlier run's\n"  # not replaced by a failure
    assert (out / "alpha.tar").stat().st_mode & 0o777 == 0o644
    with tarfile.open(out / "alpha.tar") as tar:
        assert "index.json" in tar.getnames()
    for i in range(2):
        services = _services(tmp_path / f"report{i}.json")
        assert services["alpha"]["tarball"] == str(out / "alpha.tar")
        assert services["beta"]["tarball"] == ""
