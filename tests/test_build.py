"""The pipeline against the real engine: every service of the example monorepo builds and
passes its tests; the images are slim, non-root, layered as promised and traceable."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagger
import pytest
from dagger import dag

from pipeline import session
from pipeline.core import jobs
from pipeline.core.settings import CA_BUNDLE_ENV, RunOptions
from pipeline.edges.resultcache import ResultCache
from pipeline.engine import compat, images, runner
from pipeline.engine import layers as venv_layers
from pipeline.session import build_settings
from tests.conftest import (
    copy_example,
    git,
    pipeline_in,
    skopeo,
    tarball_facts,
    tiny_repo,
    value_of,
)

if TYPE_CHECKING:
    from pipeline.core import model
    from pipeline.core.outcomes import Result
    from pipeline.core.settings import BuildSettings

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]


@pytest.fixture(scope="session")
def example(tmp_path_factory: pytest.TempPathFactory) -> model.Project:
    return session.load(copy_example(tmp_path_factory.mktemp("example")))


@pytest.fixture(scope="session")
def settings(example: model.Project, base_image: str) -> BuildSettings:
    return build_settings(example, base_image, "tests")


@pytest.fixture(scope="session")
async def built(
    example: model.Project, settings: BuildSettings, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Result]:
    out = tmp_path_factory.mktemp("out")
    options = RunOptions(jobs=3, out_dir=out, test=True)
    results = await session.build(example, list(example.services.values()), settings, options)
    return {r.service: r for r in results}


async def _containers(
    project: model.Project, services: list[model.Service], settings: BuildSettings
) -> dict[str, dagger.Container]:
    """The runtime image of each service, lazily (nothing is built until asked)."""
    cache = ResultCache(project.root, settings.cache_scope, read=False, write=False)
    secrets = runner.secrets_from_env(settings)
    tiers = images.tier_images(project, settings, secrets)
    return {
        job.service.name: images.service_build(
            project, job.service, settings, tiers, job.stamp
        ).image
        for job in jobs.plan(project, services, settings, settings.base_image, cache)
    }


def _fresh_tier_inputs(repo: Path) -> Path:
    """Secrets and cache volumes are not part of BuildKit's cache keys: a changed requirement
    file makes the installs really run again, against the index under test."""
    req = repo / "requirements/base.txt"
    req.write_text(req.read_text() + f"# {time.time_ns()}\n")
    return repo


def test_every_service_builds_and_passes_its_tests(built: dict[str, Result]):
    assert set(built) == {"gateway", "users", "worker", "inference", "reports", "greeter", "echo"}
    for name, result in built.items():
        assert result.ok, f"{name}: {result.reason}"
        assert result.tests.get("unit") is True, name  # the service's own pytest suite
        assert result.tests.get("smoke") is True, name
    # HTTP, gRPC (grpc.health.v1) and TCP probes
    for name in ("gateway", "users", "inference", "reports", "greeter", "echo"):
        assert built[name].tests.get("health") is True, name
    assert "health" not in built["worker"].tests  # no port, no health check


async def test_runtime_images_are_non_root_without_compilers(
    example: model.Project, settings: BuildSettings
):
    ctrs = await _containers(example, list(example.services.values()), settings)
    for name, ctr in ctrs.items():
        out = await ctr.with_exec(
            [
                "sh",
                "-c",
                (
                    "echo uid=$(id -u) user=$(id -un); "
                    "echo compilers=$(for c in gcc cc g++ c++ make; do command -v $c; done)"
                ),
            ]
        ).stdout()
        assert value_of(out, "uid") == f"{example.spec.uid} user={example.spec.user}", name
        assert value_of(out, "compilers") == "", f"{name} ships a compiler: {out}"


async def test_tier_layers_are_shared_byte_for_byte(
    example: model.Project, settings: BuildSettings, built: dict[str, Result], tmp_path: Path
):
    tiers = images.tier_images(example, settings, runner.secrets_from_env(settings))
    layers = {}
    for name in ("base", "backend", "ai"):
        await tiers[name].image.export(str(tmp_path / f"{name}.tar"))
        layers[name] = tarball_facts(tmp_path / f"{name}.tar").layers
    # ai-base holds backend-base's files and its own: base-base's layers, ai's own layer laid
    # right on them, then backend's layer, the same blob (images.lowest)
    assert layers["ai"][: len(layers["base"])] == layers["base"]
    assert layers["ai"][-1] == layers["backend"][-1]
    assert len(layers["ai"]) == len(layers["backend"]) + 1
    for name in ("users", "worker", "gateway", "reports"):
        facts = built[name].image
        assert facts is not None
        assert facts.layers[: len(layers["backend"])] == layers["backend"], name
    inference = built["inference"].image
    assert inference is not None
    assert inference.layers[: len(layers["ai"])] == layers["ai"]
    # each result's tier facts (read off its own image) are its tier image's own layers
    for name, result in built.items():
        assert result.tier_image is not None
        assert result.tier_image.layers == layers[result.tier], name
        assert result.tier_image.size == sum(result.image.layer_sizes[: len(layers[result.tier])])  # type: ignore[union-attr]
    # heavy ML only in the ai tier: tens of MB there, and not importable in a backend image
    assert inference.size - built["users"].image.size > 40e6  # type: ignore[union-attr]
    for name in ("users", "worker", "gateway", "reports"):
        err = await _run(built[name].tarball, ["python", "-c", "import numpy"], expect_fail=True)
        assert "No module named 'numpy'" in err, name


async def test_service_dependencies_are_their_own_layer(built: dict[str, Result]):
    users, gateway = built["users"].image, built["gateway"].image
    assert users is not None and gateway is not None
    # gateway = the same tier layers + its own requirements layer + its source layer
    assert len(gateway.layers) == len(users.layers) + 1
    httpx = await _run(
        built["gateway"].tarball, ["python", "-c", "import httpx; print('v=' + httpx.__version__)"]
    )
    assert value_of(httpx, "v") == "0.27.2"
    # the service's requirements did not leak into its tier
    missing = await _run(built["users"].tarball, ["python", "-c", "import httpx"], expect_fail=True)
    assert "No module named 'httpx'" in missing


async def _run(tarball: str, cmd: list[str], expect_fail: bool = False) -> str:
    import dagger

    ctr = dag.container().import_(dag.host().file(tarball))
    try:
        return await ctr.with_exec(cmd).stdout()
    except dagger.ExecError as exc:
        if expect_fail:
            return exc.stderr
        raise


async def test_source_edit_changes_only_the_last_layer_of_that_service(
    tmp_path: Path, base_image: str
):
    repo = copy_example(tmp_path / "repo", services=("users", "worker"))
    project = session.load(repo)
    options = RunOptions(jobs=2, out_dir=tmp_path / "one", test=False)
    settings = build_settings(project, base_image, "tests")
    before = {
        r.service: r.image
        for r in await session.build(project, list(project.services.values()), settings, options)
    }
    app = repo / "services/users/users/app.py"
    app.write_text(app.read_text() + "\n# a comment that changes nothing but the file\n")
    settings = build_settings(project, base_image, "tests")
    options = replace(options, out_dir=tmp_path / "two")
    after = {
        r.service: r.image
        for r in await session.build(project, list(project.services.values()), settings, options)
    }
    b, a = before["users"], after["users"]
    assert b is not None and a is not None
    assert a.layers[:-1] == b.layers[:-1]
    assert a.layers[-1] != b.layers[-1]
    assert after["worker"] == before["worker"]  # same digest, same layers


async def test_venvs_and_sources_are_precompiled(built: dict[str, Result]):
    """Unchecked-hash .pyc files (flags = 1): valid despite normalised mtimes, so a container
    imports without compiling."""
    probe = (
        "import importlib.util, fastapi, users.app\n"
        "for mod in (fastapi, users.app):\n"
        "    pyc = importlib.util.cache_from_source(mod.__file__)\n"
        "    print('flags=' + str(int.from_bytes(open(pyc, 'rb').read()[4:8], 'little')))\n"
    )
    out = await _run(built["users"].tarball, ["python", "-c", probe])
    assert re.findall(r"^flags=(\d+)$", out, flags=re.MULTILINE) == ["1", "1"]


async def test_package_test_suites_are_not_precompiled(built: dict[str, Result]):
    """The test suites packages ship (numpy's) stay source only: no service imports them,
    and compiling them cost a third of the ai tier's compile; the package itself is
    compiled."""
    probe = (
        "import importlib.util, os, pathlib, numpy\n"
        "root = pathlib.Path(numpy.__file__).parent\n"
        "tests = sorted(root.glob('*/tests/test_*.py'))\n"
        "print('tests=' + str(len(tests)))\n"
        "print('compiled=' + str(sum(os.path.exists(importlib.util.cache_from_source(str(t)))"
        " for t in tests)))\n"
        "print('numpy=' + str(os.path.exists(importlib.util.cache_from_source(numpy.__file__))))\n"
    )
    out = await _run(built["inference"].tarball, ["python", "-c", probe])
    assert int(value_of(out, "tests")) > 10
    assert value_of(out, "compiled") == "0"
    assert value_of(out, "numpy") == "True"


async def test_cache_volumes_are_scoped(tmp_path: Path, base_image: str):
    """A build fills the uv cache of its own scope only: branches never share caches. (The
    base tier's requirements change, so its install really runs in the new scope.)"""
    repo = _fresh_tier_inputs(copy_example(tmp_path / "repo", services=("worker",)))
    scope, other = f"tests-scope-{time.time_ns()}", f"tests-other-{time.time_ns()}"
    done = pipeline_in(repo, base_image, "build", "--no-test", scope=scope)
    assert done.returncode == 0, done.stderr

    async def cached_pydantic(scope: str) -> str:
        out = await (
            dag.container()
            .from_(base_image)
            .with_mounted_cache("/c", images.cache(scope, "uv"))
            .with_env_variable("AT", str(time.time_ns()))
            .with_exec(["sh", "-c", "echo n=$(find /c -maxdepth 4 -iname 'pydantic*' | wc -l)"])
            .stdout()
        )
        return value_of(out, "n")

    assert int(await cached_pydantic(scope)) > 0
    assert int(await cached_pydantic(other)) == 0


async def test_a_step_that_mounts_a_scope_cache_is_never_replayed_in_another_scope(
    tmp_path: Path, base_image: str
):
    """A builder step after the scope's volumes (a tier install, a test environment) may hold
    what those volumes held, and a branch's own tests can write its uv cache: another scope
    runs the step again instead of replaying it, on every engine, while the same scope
    replays it. v0.11 leaves a cache mount's ID out of a step's cache key, so only the scope
    named in the builder's environment keeps branches apart there."""
    project = session.load(copy_example(tmp_path / "repo", services=("worker",)))
    run = time.time_ns()
    script = f"echo run={run}; echo ran=$(date +%s%N); echo scope=${images.SCOPE_ENV}"
    step = ["sh", "-c", script]
    seen = []
    for scope in (f"tests-own-{run}", f"tests-own-{run}", f"tests-else-{run}"):
        settings = build_settings(project, base_image, scope)
        secrets = runner.secrets_from_env(settings)
        out = await images.builder(settings, (), secrets).with_exec(step).stdout()
        seen.append((value_of(out, "ran"), value_of(out, "scope")))
    own, again, other = seen
    assert again == own  # replayed in its own scope
    assert other[0] != own[0]  # run again in the other
    assert (own[1], other[1]) == (f"tests-own-{run}", f"tests-else-{run}")


async def test_a_new_scope_starts_from_the_compilers_and_uv_another_scope_installed(
    tmp_path: Path, base_image: str
):
    """The builder's first steps (build-essential, then uv) mount no volume of a scope: a
    branch's first build starts from the compilers and uv that any scope installed, with the
    same install times, instead of installing them again; the steps after them mount the
    scope's own uv cache."""
    project = session.load(copy_example(tmp_path / "repo", services=("worker",)))
    run = time.time_ns()
    script = (
        "touch $UV_CACHE_DIR/{scope}; echo cache=$(ls $UV_CACHE_DIR); "
        "echo dpkg=$(stat -c %y /var/lib/dpkg/status); "
        "echo uv=$(stat -c %y /opt/uv/pyvenv.cfg); echo version=$(uv --version)"
    )
    seen = []
    for scope in (f"tests-first-{run}", f"tests-second-{run}"):
        settings = build_settings(project, base_image, scope)
        secrets = runner.secrets_from_env(settings)
        out = await (
            images.builder(settings, (), secrets)
            .with_env_variable("AT", str(time.time_ns()))
            .with_exec(["sh", "-c", script.format(scope=scope)])
            .stdout()
        )
        listing = value_of(out, "cache").split()
        assert scope in listing  # its marker, in the uv cache it mounts
        assert value_of(out, "version").startswith("uv ")
        seen.append((value_of(out, "dpkg"), value_of(out, "uv"), listing))
    (dpkg, uv, _), (dpkg2, uv2, listing2) = seen
    assert (dpkg2, uv2) == (dpkg, uv)  # installed once, by whichever scope came first
    assert f"tests-first-{run}" not in listing2  # the uv cache is still the scope's own


async def test_downloads_ahead_fill_uv_cache_and_leave_nothing_else(
    tmp_path: Path, base_image: str
):
    """The downloads ahead of the tier installs (images.prefetch): the ai chain's one exec
    puts the ai tier's wheels into uv's cache of the scope before any tier installs, and
    leaves no folder of its own there; a tier alone (no parent to wait for) gets none."""
    project = session.load(_fresh_tier_inputs(copy_example(tmp_path / "repo", ("inference",))))
    settings = build_settings(project, base_image, f"tests-ahead-{time.time_ns()}")
    secrets = runner.secrets_from_env(settings)
    assert images.prefetch(project, {"base"}, settings, secrets) == []
    ahead = images.prefetch(project, {"backend", "ai"}, settings, secrets)
    assert len(ahead) == 1  # the ai chain covers the backend one
    await ahead[0].sync()
    listing = await (
        dag.container()
        .from_(base_image)
        .with_mounted_cache("/c", images.cache(settings.cache_scope, "uv"))
        .with_env_variable("AT", str(time.time_ns()))
        .with_exec(["sh", "-c", "ls -a /c; find /c -maxdepth 4 -iname 'scikit_learn*'"])
        .stdout()
    )
    assert "scikit_learn" in listing  # an ai tier package, fetched ahead
    assert ".pipeline-prefetch" not in listing


async def test_labels_and_build_info(built: dict[str, Result], example: model.Project):
    head = git(example.root, "rev-parse", "HEAD")
    tarball = built["users"].tarball
    config = skopeo("inspect", "--config", f"oci-archive:{tarball}")
    labels = config["config"]["Labels"]
    assert labels["org.opencontainers.image.revision"] == head
    assert labels["org.opencontainers.image.created"] == "2026-01-02T03:04:05Z"
    assert labels["org.opencontainers.image.source"] == "https://example.com/acme/monorepo"
    assert labels["org.opencontainers.image.title"] == "users"
    assert labels["org.opencontainers.image.version"] == head[:12]
    assert config["config"]["User"] == "app"
    assert config["config"]["WorkingDir"] == "/app"
    assert "8000/tcp" in config["config"]["ExposedPorts"]
    image = dag.container().import_(dag.host().file(tarball))
    # only the service's own included files were uploaded: no tests, manifest or caches
    # (v0.21 ends folder names with "/", v0.11 does not)
    top = sorted(e.rstrip("/") for e in await image.directory("/app").entries())
    assert top == ["build-info.json", "users"]
    entries = sorted(e.rstrip("/") for e in await image.directory("/app/users").entries())
    assert entries == ["__init__.py", "__pycache__", "app.py"]
    info = json.loads(await image.file("/app/build-info.json").contents())
    assert info == {
        "service": "users",
        "tier": "backend",
        "commit": head,
        "dirty": False,
        "version": head[:12],
        "created": "2026-01-02T03:04:05Z",
        "source": "https://example.com/acme/monorepo",
    }


async def test_a_build_without_files_reads_the_same_facts_in_the_engine(
    built: dict[str, Result], example: model.Project, settings: BuildSettings
):
    """With nothing to write or push, the digest, size and layers come from the engine (no
    tarball crosses to the host); they equal those of the exported tarballs."""
    chosen = [example.services["users"], example.services["inference"]]
    results = await session.build(example, chosen, settings, RunOptions(jobs=2, test=False))
    for result in results:
        assert result.tarball == ""
        assert result.image == built[result.service].image
        assert result.image is not None
        assert result.image.layers == tarball_facts(built[result.service].tarball).layers


def test_exported_tarballs_are_valid_oci_images(built: dict[str, Result]):
    for name, result in built.items():
        assert result.tarball.endswith(f"{name}.tar")
        with tarfile.open(result.tarball) as tar:
            layout = json.loads(tar.extractfile("oci-layout").read())  # type: ignore[union-attr]
        assert layout["imageLayoutVersion"] == "1.0.0"
        inspected = skopeo("inspect", f"oci-archive:{result.tarball}")
        assert result.image is not None
        assert tuple(inspected["Layers"]) == result.image.layers
        assert inspected["Digest"] == result.image.digest


def test_a_failing_service_does_not_hide_the_others(tmp_path: Path, base_image: str):
    repo = copy_example(tmp_path / "repo", services=("worker",))
    broken = repo / "services" / "broken"
    broken.mkdir()
    # its smoke and health checks are asked of the engine beside its image: the image's
    # failure must be the one reported, not theirs
    (broken / "service.toml").write_text(
        'tier = "backend"\ncommand = ["python", "-m", "http.server", "8000"]\n'
        'requirements = "requirements.txt"\nport = 8000\nhealth_path = "/"\n'
        'smoke = ["python", "-c", "1"]\n'
    )
    (broken / "requirements.txt").write_text("pipeline-test-no-such-package==9.9.9\n")
    failing = repo / "services" / "failing"
    failing.mkdir()
    (failing / "service.toml").write_text(
        'tier = "base"\ncommand = ["python", "-c", "1"]\n'
        'tests = ["sh", "-c", "echo 2 failed, 5 passed in 0.1s; exit 1"]\n'
    )
    conflict = repo / "services" / "conflict"
    conflict.mkdir()
    (conflict / "service.toml").write_text(
        'tier = "backend"\ncommand = ["python", "-c", "1"]\nrequirements = "requirements.txt"\n'
    )
    # the base tier pins pydantic 2.9.2, which pulls in pydantic-core 2.23.4: only the resolver
    # sees this one (a direct pin against the tier's file is a config error before the build)
    (conflict / "requirements.txt").write_text("pydantic-core==2.20.1\n")
    report = tmp_path / "report.json"
    done = pipeline_in(repo, base_image, "build", "--report", str(report))
    assert done.returncode == 1, done.stderr
    results = {s["service"]: s for s in json.loads(report.read_text())["services"]}
    reason = results["conflict"]["reason"]
    assert "conflict's requirements conflict with the pins of tier 'backend'" in reason
    assert "pydantic-core" in reason
    assert "loosen the tier's pin or move the package out of the tier" in reason
    assert results["worker"]["status"] == "ok"
    assert results["broken"]["status"] == "failed"
    assert "pipeline-test-no-such-package" in results["broken"]["reason"]
    # the install failed, whichever check waited for it: not the unit tests
    assert results["broken"]["reason"].startswith("dependencies: "), results["broken"]["reason"]
    assert results["broken"]["tests"] == {}, results["broken"]["tests"]
    assert results["failing"]["status"] == "failed"
    assert results["failing"]["tests"] == {"unit": False}
    assert results["failing"]["reason"].startswith("unit: 2 failed, 5 passed in 0.1s")
    assert "1 built, 3 failed" in done.stdout
    # no --jobs: as many services at once as the engine's machine (this one) has logical CPUs
    slots = [json.loads(line) for line in done.stderr.splitlines() if '"build_slots"' in line]
    assert slots == [slots[0]], done.stderr
    assert (slots[0]["jobs"], slots[0]["given"]) == (len(os.sched_getaffinity(0)), False)


async def test_the_engine_machine_s_logical_cpus_are_asked_in_the_base_image(base_image: str):
    # the engine runs on this machine here, with every CPU of it
    assert await runner.engine_cores(base_image) == len(os.sched_getaffinity(0))


def test_test_requirements_that_cannot_install_fail_each_tested_service_as_dependencies(
    tmp_path: Path, base_image: str
):
    """When the project's test requirements cannot be installed, every service with tests
    says so as a failure of its dependencies (not of its tests), naming the package, and a
    service without tests is built."""
    repo = copy_example(tmp_path / "repo", services=("worker", "users"))
    plain = repo / "services" / "plain"
    plain.mkdir()
    (plain / "service.toml").write_text('tier = "backend"\ncommand = ["python", "-c", "1"]\n')
    tests = repo / "requirements" / "test.txt"
    tests.write_text(tests.read_text() + "pipeline-test-no-such-package==9.9.9\n")
    report = tmp_path / "report.json"
    done = pipeline_in(repo, base_image, "build", "--report", str(report))
    assert done.returncode == 1, done.stderr
    results = {s["service"]: s for s in json.loads(report.read_text())["services"]}
    for name in ("worker", "users"):
        reason = results[name]["reason"]
        assert results[name]["status"] == "failed"
        assert reason.startswith("dependencies: "), reason
        assert "pipeline-test-no-such-package" in reason
        assert "unit" not in results[name]["tests"]
    assert results["plain"]["status"] == "ok"
    assert "1 built, 2 failed" in done.stdout


def test_publish_pushes_tested_images_under_the_tag_strategy(
    tmp_path: Path, base_image: str, registry: str
):
    repo = copy_example(tmp_path / "repo", services=("worker",))
    namespace = f"{registry}/t{time.time_ns()}"
    password = f"s3cret-{time.time_ns()}"
    report = tmp_path / "report.json"
    done = pipeline_in(
        repo,
        base_image,
        "publish",
        "--registry",
        namespace,
        "--registry-username",
        "ci",
        "--report",
        str(report),
        env={"PIPELINE_REGISTRY_PASSWORD": password},
    )
    assert done.returncode == 0, done.stderr
    head = git(repo, "rev-parse", "HEAD")
    result = json.loads(report.read_text())["services"][0]
    assert [ref.split("@")[0].rsplit(":", 1)[1] for ref in result["published"]] == [
        head[:12],
        "branch-main",
        "latest",
    ]
    tags = skopeo("list-tags", "--tls-verify=false", f"docker://{namespace}/worker")["Tags"]
    pushed = skopeo("inspect", "--tls-verify=false", f"docker://{namespace}/worker:{head[:12]}")
    # and the tag that indexes its attestations (the referrers fallback)
    attestations = f"sha256-{pushed['Digest'].removeprefix('sha256:')}"
    assert sorted(tags) == sorted([head[:12], "branch-main", "latest", attestations])
    assert pushed["Labels"]["org.opencontainers.image.revision"] == head
    assert all(ref.endswith(pushed["Digest"]) for ref in result["published"])
    # the password travels as a Dagger secret: never in output or report
    assert password not in done.stdout + done.stderr + report.read_text()


def test_index_credentials_stay_secret(tmp_path: Path, base_image: str):
    """A private index URL with a token reaches uv as a Dagger secret: the build works, and
    the token is in no output, report, layer or image config. Nor is one that a requirements
    file itself names, even in the engine's progress output (--verbose)."""
    repo = _fresh_tier_inputs(copy_example(tmp_path / "repo", services=("worker",)))
    token, in_file = f"tok-{time.time_ns()}", f"file-tok-{time.time_ns()}"
    req = repo / "requirements/backend.txt"
    req.write_text(f"--extra-index-url https://ci:{in_file}@pypi.org/simple\n{req.read_text()}")
    out, report = tmp_path / "out", tmp_path / "report.json"
    done = pipeline_in(
        repo,
        base_image,
        "export",
        "--verbose",
        "--out",
        str(out),
        "--no-test",
        "--report",
        str(report),
        scope=f"tests-secret-{time.time_ns()}",
        env={"PIPELINE_INDEX_URL": f"https://ci:{token}@pypi.org/simple"},
    )
    assert done.returncode == 0, done.stderr
    for secret in (token, in_file):
        assert secret not in done.stdout + done.stderr + report.read_text()
    assert "backend.txt" in done.stderr  # the progress output was there to be read
    with tarfile.open(out / "worker.tar") as image:
        for member in image.getmembers():
            if not member.isfile():
                continue
            blob = image.extractfile(member).read()  # type: ignore[union-attr]
            if blob[:2] == b"\x1f\x8b":
                blob = gzip.decompress(blob)
            assert token.encode() not in blob, member.name
            assert in_file.encode() not in blob, member.name


def test_index_url_reaches_uv_and_failures_do_not_reveal_it(tmp_path: Path, base_image: str):
    repo = _fresh_tier_inputs(copy_example(tmp_path / "repo", services=("worker",)))
    token = f"tok-{time.time_ns()}"
    report = tmp_path / "report.json"
    done = pipeline_in(
        repo,
        base_image,
        "build",
        "--no-test",
        "--report",
        str(report),
        scope=f"tests-secret-{time.time_ns()}",
        env={"PIPELINE_INDEX_URL": f"http://ci:{token}@127.0.0.1:9/simple"},
    )
    assert done.returncode == 1  # the only index is unreachable: uv really used it
    assert token not in done.stdout + done.stderr + report.read_text()


async def test_two_checkouts_of_one_commit_give_the_same_image(tmp_path: Path, base_image: str):
    """Same commit, different folders and file times: the same digest, so an image always
    says which commit it came from and a rebuild of that commit is the same image."""
    digests = []
    for i, stamp in enumerate((1_000_000_000, 1_700_000_000)):
        repo = copy_example(tmp_path / f"checkout-{i}", services=("users",))
        for path in (repo / "services").rglob("*"):
            os.utime(path, (stamp, stamp))
        project = session.load(repo)
        settings = build_settings(project, base_image, "tests")
        options = RunOptions(jobs=1, test=False)
        [result] = await session.build(project, list(project.services.values()), settings, options)
        assert result.ok, result.reason
        assert result.image is not None
        digests.append(result.image.digest)
    assert git(tmp_path / "checkout-0", "rev-parse", "HEAD") == git(
        tmp_path / "checkout-1", "rev-parse", "HEAD"
    )
    assert digests[0] == digests[1]


async def test_service_apt_packages_are_a_layer_without_apt_caches(
    built: dict[str, Result], example: model.Project, settings: BuildSettings
):
    worker, users = built["worker"].image, built["users"].image
    assert worker is not None and users is not None
    assert len(worker.layers) == len(users.layers) + 1  # tini, on top of the same tier layers
    ctr = (await _containers(example, [example.services["worker"]], settings))["worker"]
    out = await ctr.with_exec(
        [
            "sh",
            "-c",
            (
                "echo tini=$(command -v tini); echo lists=$(ls -A /var/lib/apt/lists | wc -l); "
                "echo debs=$(find /var/cache/apt -name '*.deb' | wc -l)"
            ),
        ]
    ).stdout()
    assert value_of(out, "tini") == "/usr/bin/tini"
    assert value_of(out, "lists") == "0"
    assert value_of(out, "debs") == "0"


async def test_a_service_with_debian_packages_of_its_own_starts_first(
    tmp_path: Path, base_image: str
):
    """With one slot, the service whose own chain holds an apt-get update and install starts
    before a service named before it (the last build to end is then a short one), and the
    results still come in the services' order."""
    repo = tiny_repo(tmp_path / "repo", {"alpha": "pass", "omega": "pass"})
    manifest = repo / "services/omega/service.toml"
    manifest.write_text(manifest.read_text() + 'apt = ["tini"]\n')
    project = session.load(repo)
    settings = build_settings(project, base_image, "tests")
    options = RunOptions(jobs=1, test=False)
    alpha, omega = await session.build(project, list(project.services.values()), settings, options)
    assert (alpha.service, omega.service) == ("alpha", "omega")
    assert alpha.ok and omega.ok, (alpha.reason, omega.reason)
    assert omega.started < alpha.started


def test_sigterm_stops_the_run_with_130_and_no_partial_tarballs(tmp_path: Path, base_image: str):
    repo = copy_example(tmp_path / "repo", services=("users",))
    app = repo / "services/users/users/app.py"
    app.write_text(app.read_text() + f"\n# {time.time_ns()}\n")  # real work to interrupt
    out = tmp_path / "out"
    # a staging folder a killed run left behind (its process is gone): swept
    (out / ".users-pipeline4194300-stale").mkdir(parents=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "export",
            "--out",
            str(out),
            "--project-dir",
            str(repo),
            "--base-image",
            base_image,
            "--cache-scope",
            "tests",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "build_started" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert "Traceback" not in err
    assert not list(out.iterdir())  # hidden staging folders included


def test_a_run_without_out_sweeps_what_killed_runs_left_in_the_temporary_folder(
    tmp_path: Path, base_image: str
):
    """Without --out a run stages in the system's temporary folder; a staging folder there
    whose run was killed (its process gone) is removed by the next run, and the run leaves
    none of its own."""
    repo = tiny_repo(tmp_path / "repo", {"alpha": "print('a')"})
    temp = tmp_path / "temp"
    stale = temp / ".alpha-pipeline4194300-stale"
    stale.mkdir(parents=True)
    (stale / "image.tar").write_bytes(b"x" * 1024)
    other = temp / ".alpha-notours"  # not a staging folder's name: left alone
    other.mkdir()
    done = pipeline_in(repo, base_image, "build", "--no-test", env={"TMPDIR": str(temp)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in temp.iterdir() if ".alpha" in p.name) == [".alpha-notours"]


async def test_a_fresh_install_gives_a_byte_identical_venv_layer(
    example: model.Project, settings: BuildSettings, tmp_path: Path
):
    """Not the engine's cache: the install really runs twice, and the layers still match
    (fixed mtimes, deterministic unchecked-hash pyc)."""
    layers = []
    for i in range(2):
        build = images.builder(settings, secrets=runner.secrets_from_env(settings))
        build = build.with_env_variable("RUN", f"{time.time_ns()}-{i}")
        built, _ = images.tier_venv(build, example.tiers["base"], first=True)
        ctr = images.runtime_os(settings).with_(
            venv_layers.with_tree(venv_layers.added_tree(built))
        )
        await ctr.export(str(tmp_path / f"{i}.tar"))
        layers.append(tarball_facts(tmp_path / f"{i}.tar").layers)
    assert layers[0] == layers[1]


async def test_a_tier_layer_installed_again_alike_is_laid_as_the_one_the_engine_has(
    example: model.Project, settings: BuildSettings, tmp_path: Path
):
    """A tier's venv layer that another step (a new cache scope's install) makes again, equal
    to the last, is the same result once laid, so the engine lays and compresses it once:
    on v0.21 as layers.by_content gives it (a tree known by its bytes), on v0.11 as the
    engine keys a copied folder. Laid so, it is the layer the tree itself lays, byte for
    byte."""
    secrets = runner.secrets_from_env(settings)
    runs, layers = [], []
    for i in range(2):
        build = images.builder(settings, secrets=secrets)
        build = build.with_env_variable("RUN", f"{time.time_ns()}-{i}")
        built, _ = images.tier_venv(build, example.tiers["base"], first=True)
        tree = venv_layers.added_tree(built)
        laid = images.runtime_os(settings).with_(
            venv_layers.with_tree(venv_layers.by_content(tree, settings.base_image))
        )
        runs.append(await laid.with_exec(["sh", "-c", "date +%s%N"]).stdout())
        if i == 0:
            plain = images.runtime_os(settings).with_(venv_layers.with_tree(tree))
            for name, ctr in (("plain", plain), ("by-content", laid)):
                await ctr.export(str(tmp_path / f"{name}.tar"))
                layers.append(tarball_facts(tmp_path / f"{name}.tar").layers)
    assert layers[0] == layers[1]
    assert runs[0] == runs[1]  # an exec on the second image replays the first's


def _bundles(folder: Path, count: int) -> list[tuple[Path, str]]:
    """``count`` CA bundles, each the host's with a comment of its own, and their digests."""
    host = Path(os.environ.get(CA_BUNDLE_ENV) or "/etc/ssl/certs/ca-certificates.crt")
    made = []
    for i in range(count):
        bundle = folder / f"ca-{i}.pem"
        bundle.write_text(f"{host.read_text()}\n# bundle {i} {time.time_ns()}\n")
        made.append((bundle, hashlib.sha256(bundle.read_bytes()).hexdigest()))
    return made


async def test_a_builder_finds_its_ca_bundle_with_no_step_before_it(
    settings: BuildSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The proxy's CA bundle is at SSL_CERT_FILE in the first exec of a builder in a scope
    the engine never saw, with nothing staged before it; another bundle is another file there
    (the folder is keyed by the bundle, not replayed from the first); and the builder's own
    filesystem holds no copy."""
    show = ["sh", "-c", 'echo "pipeline-ca=$(sha256sum < "$SSL_CERT_FILE" | cut -c1-64)"']
    for bundle, digest in _bundles(tmp_path, 2):
        monkeypatch.setenv(CA_BUNDLE_ENV, str(bundle))
        fresh = replace(settings, cache_scope=f"tests-ca-{time.time_ns()}")
        build = images.builder(fresh, secrets=runner.secrets_from_env(fresh))
        said = await build.with_(compat.run(show)).stdout()
        assert re.findall(r"^pipeline-ca=(\w+)$", said, re.MULTILINE) == [digest]
    look = ["sh", "-c", f"test -e {images.CA_BUNDLE} && echo kept || echo absent"]
    assert "absent" in await build.without_mount(images.CA_DIR).with_(compat.run(look)).stdout()


async def test_a_package_added_to_a_tier_replays_its_services_debian_install(
    tmp_path: Path, base_image: str
):
    """A service's Debian packages are installed on its tier's system without the venv, so a
    Python package added to the tier replays that install (apt-get and two walks of the whole
    rootfs): the exec's snapshot keeps the time of its one run. Installed on the tier's image,
    as before, the install runs again. The worker's image still holds tini and the new
    package."""
    scope = f"tests-apt-replay-{time.time_ns()}"
    stamp = ["stat", "-c", "%y", "/tmp/pipeline-snapshot.json"]
    on_system, on_image = [], []
    for i, added in enumerate(("", "six==1.16.0\n")):
        repo = copy_example(tmp_path / f"repo{i}", services=("worker",))
        backend = repo / "requirements/backend.txt"
        backend.write_text(backend.read_text() + added)
        project = session.load(repo)
        settings = build_settings(project, base_image, scope)
        tiers = images.tier_images(project, settings, runner.secrets_from_env(settings))
        tier = tiers["backend"]
        for on, seen in ((tier.os, on_system), (tier.image, on_image)):
            installed = images.apt_install(["tini"], scope, on)
            seen.append((await installed.with_exec(stamp).stdout()).strip())
        worker = (await _containers(project, [project.services["worker"]], settings))["worker"]
        modules = "six" if added else "sys"
        check = f"tini --version && python -c 'import {modules}; print(\"imported\")'"
        assert "imported" in await worker.with_exec(["sh", "-c", check]).stdout()
    assert on_system[0] == on_system[1]  # installed once, replayed after the tier changed
    assert on_image[0] != on_image[1]  # on the tier's image it ran again


async def test_apt_packages_give_the_same_image_from_a_fresh_install(
    tmp_path: Path, base_image: str
):
    """A service's Debian packages (worker's tini) are installed again in a fresh cache scope
    and the image is the same, byte for byte: nothing dpkg writes carries the install's time.
    v0.11's engine keeps the install across scopes, so the packages' layer is also made twice
    with a variable that makes the install really run again, on either engine."""
    repo = copy_example(tmp_path / "repo", services=("worker",))
    digests, tarballs = [], []
    for i in range(2):
        out, report = tmp_path / f"out-{i}", tmp_path / f"report-{i}.json"
        done = pipeline_in(
            repo,
            base_image,
            "export",
            "worker",
            "--no-cache",
            "--no-test",
            "--out",
            str(out),
            "--report",
            str(report),
            scope=f"tests-apt-{time.time_ns()}",
        )
        assert done.returncode == 0, done.stderr
        [result] = json.loads(report.read_text())["services"]
        tarballs.append(out / "worker.tar")
        assert result["image"]["digest"] == tarball_facts(tarballs[-1]).digest
        digests.append(result["image"]["digest"])
    assert digests[0] == digests[1]
    # the packages' layer (the one below the source's) holds the install's files, nothing of
    # the engine's (v0.11's exec wrote its stderr under /.dagger_meta_mount) or apt's caches
    with tarfile.open(tarballs[0]) as image:
        digest = tarball_facts(tarballs[0]).layers[-2].removeprefix("sha256:")
        member = image.extractfile(f"blobs/sha256/{digest}")
        assert member is not None
        with tarfile.open(fileobj=member) as layer:
            names = layer.getnames()
    assert {name.split("/")[0] for name in names} == {"usr", "var"}
    assert "usr/bin/tini" in names
    assert not [name for name in names if name.startswith(("var/cache/apt/", "var/lib/apt/lists/"))]
    ran = await _run(str(tarballs[0]), ["tini", "--", "sh", "-c", "echo uid=$(id -u)"])
    assert value_of(ran, "uid") not in ("", "0")  # tini starts the command, as the non-root user

    settings = build_settings(session.load(repo), base_image, "tests")
    layers = []
    for i in range(2):
        system = images.runtime_os(settings).with_env_variable("RUN", f"{time.time_ns()}-{i}")
        debs = images.apt_layer(["tini"], f"tests-apt-{time.time_ns()}", system)
        ctr = system.with_(venv_layers.with_tree(debs))
        await ctr.export(str(tmp_path / f"{i}.tar"))
        layers.append(tarball_facts(tmp_path / f"{i}.tar").layers)
    assert layers[0] == layers[1]


async def test_accounts_carry_no_build_day(settings: BuildSettings):
    """/etc/shadow dates each password's last change in days: the runtime user, and a system
    user a package's install adds (uuid-runtime adds uuidd), are dated at the fixed time, not
    on the day the image was built, so builds on two days give one image (the base image's own
    accounts are as its maker dated them). A variable makes both installs really run."""
    system = images.runtime_os(settings).with_env_variable("RUN", str(time.time_ns()))
    debs = images.apt_layer(["uuid-runtime"], f"tests-shadow-{time.time_ns()}", system)
    ctr = system.with_(venv_layers.with_tree(debs))
    shadow = await ctr.file("/etc/shadow").contents()
    days = {line.split(":")[0]: line.split(":")[2] for line in shadow.splitlines()}
    assert settings.user in days, shadow
    assert "uuidd" in days, shadow
    fixed_day = str(venv_layers.FIXED_MTIME // 86400)
    assert days[settings.user] == fixed_day, shadow
    assert days["uuidd"] == fixed_day, shadow


def _layers_of(tarball: Path) -> tuple[dict[str, Any], list[bytes]]:
    """An exported OCI tarball's image config, its layers' media types, digests and sizes, and
    the first bytes of each layer blob."""
    with tarfile.open(tarball) as tar:

        def blob(digest: str) -> bytes:
            member = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            assert member is not None
            return member.read()

        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        heads = [blob(layer["digest"])[:4] for layer in manifest["layers"]]
        types = {layer["mediaType"] for layer in manifest["layers"]}
        digests = [layer["digest"] for layer in manifest["layers"]]
        sizes = [layer["size"] for layer in manifest["layers"]]
    return {"config": config, "types": types, "digests": digests, "sizes": sizes}, heads


def test_each_compression_gives_its_layers_of_the_same_content(
    tmp_path: Path, base_image: str
) -> None:
    """compression = "zstd": every layer of the image is a zstd blob (the base image's too);
    "uncompressed": every layer is a plain tar, the very bytes its diff_id names, and the
    reported size is theirs. The files are the same as with gzip (the config's diff_ids),
    each image another one. The size budget is of the layers as compressed: the plain tar
    layers would be over worker's, so it is lifted."""
    repo = copy_example(tmp_path / "repo", services=("worker",))
    manifest = repo / "services" / "worker" / "service.toml"
    manifest.write_text(
        manifest.read_text().replace("size_budget_mb = 120", "size_budget_mb = 400")
    )
    config = repo / "pipeline.toml"
    original = config.read_text()
    outs = {}
    for compression in ("gzip", "zstd", "uncompressed"):
        config.write_text(f'compression = "{compression}"\n{original}')
        out, report = tmp_path / compression, tmp_path / f"{compression}.json"
        done = pipeline_in(repo, base_image, "export", "--out", str(out), "--report", str(report))
        assert done.returncode == 0, done.stdout + done.stderr
        (worker,) = json.loads(report.read_text())["services"]
        assert worker["status"] == "ok", worker
        outs[compression] = (worker["image"], *_layers_of(out / "worker.tar"))
    (gzipped, gzip_image, gzip_heads), (zstd, zstd_image, zstd_heads), (plain, plain_image, _) = (
        outs.values()
    )
    assert gzip_image["types"] == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    assert zstd_image["types"] == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    assert plain_image["types"] == {"application/vnd.oci.image.layer.v1.tar"}
    assert all(head[:2] == b"\x1f\x8b" for head in gzip_heads)
    assert all(head == b"\x28\xb5\x2f\xfd" for head in zstd_heads)  # zstd's frame magic
    # a plain tar layer is its own diff: its digest is the diff_id, byte for byte
    assert plain_image["digests"] == plain_image["config"]["rootfs"]["diff_ids"]
    assert plain["layer_sizes"] == plain_image["sizes"]
    assert sum(plain["layer_sizes"]) > 2 * sum(gzipped["layer_sizes"])
    # the same files but for the last layer, not compared (its build-info.json carries the
    # run's stamp), and each image another one
    files = [i["config"]["rootfs"]["diff_ids"] for i in (gzip_image, zstd_image, plain_image)]
    assert files[0][:-1] == files[1][:-1] == files[2][:-1]
    assert len(files[0]) == len(files[1]) == len(files[2])
    assert len({gzipped["digest"], zstd["digest"], plain["digest"]}) == 3
