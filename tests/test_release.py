"""Publishing as one release, against the real engine and the loopback registry, directly or
through a proxy that injects faults: immutable tags first, moving tags only when every
service passed and pushed; exports whole and only of images that passed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from typing import TYPE_CHECKING

import pytest

from tests.conftest import git, pipeline_in, skopeo, tiny_repo
from tests.faultyregistry import Fault, FaultyRegistry

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


def test_registry_refusal_names_registry_user_and_fix(
    tmp_path: Path, base_image: str, registry: str
):
    repo = tiny_repo(tmp_path / "repo", {"alpha": "print(1)"})
    with FaultyRegistry(_host(registry), credentials=("ci", "right")) as proxy:
        report = tmp_path / "report.json"
        done = pipeline_in(
            repo,
            base_image,
            "publish",
            "--registry",
            f"{proxy.address}/t{time.time_ns()}",
            "--registry-username",
            "ci",
            "--report",
            str(report),
            env={"PIPELINE_REGISTRY_PASSWORD": "wrong"},
        )
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

    def export(report: Path) -> subprocess.Popen[bytes]:
        where = ["--project-dir", str(repo), "--base-image", base_image, "--cache-scope", "tests"]
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "export",
                "--out",
                str(out),
                "--report",
                str(report),
                "--no-cache",
                *where,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    # two runs into one folder at once: neither sees the other's partial files
    runs = [export(tmp_path / f"report{i}.json") for i in range(2)]
    assert [run.wait() for run in runs] == [1, 1]
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
