"""The same inputs give byte-identical images on both Dagger generations: one commit of the
example monorepo, exported by the CLI once on the v0.11 engine the dagger-v011 extra pins (SDK
in .venv-dagger-v011) and once on v0.21.8 (dagger.json's engine, SDK in .venv), each in a
fresh cache scope with nothing replayed, must give each service the same manifest digest.

Marked ``generations``, not ``engine``: it needs both engines at once, so it runs only when
selected (``pytest -m generations``, which scripts/test runs once both engines' own runs are
done); a plain ``pytest`` or ``-m engine`` run of one generation skips it. Selected, it skips
outside CI when an engine is missing and fails under CI=true.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, copy_example

pytestmark = pytest.mark.generations

# One service per tier: base (a TCP server), backend (HTTP), ai (numpy and scikit-learn).
SERVICES = ("echo", "users", "inference")
SHOWN = 25  # differing entries listed per part of an image, so a failure stays readable
# What a CI runner sets that the pipeline reads (neither run may see it, as in conftest), and
# the generation to pick, which each run sets for itself.
RUNNER_ENV = re.compile(r"^(GITHUB_|RUNNER_|SOURCE_DATE_EPOCH$|PIPELINE_DAGGER_VERSION$)")


@dataclass(frozen=True)
class Generation:
    name: str  # the venv's suffix, as scripts/engine names generations
    python: Path
    dagger_version: str | None  # PIPELINE_DAGGER_VERSION for scripts/engine; None: dagger.json's


def _sdk_version(python: Path) -> str:
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('dagger-io'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _generations() -> tuple[Generation, Generation]:
    v011 = ROOT / ".venv-dagger-v011/bin/python"
    # the v0.11 engine is the one the dagger-v011 extra pins, as scripts/test picks it
    version = f"v{_sdk_version(v011)}" if v011.exists() else "v0.11.4"
    return (
        Generation("v011", v011, version),
        Generation("v021", ROOT / ".venv/bin/python", None),
    )


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not RUNNER_ENV.match(k)}


def _engine_env(gen: Generation) -> dict[str, str]:
    """The environment a shell has after ``eval "$(scripts/engine env)"`` for ``gen``."""
    env = _clean_env()
    if gen.dagger_version:
        env["PIPELINE_DAGGER_VERSION"] = gen.dagger_version
    done = subprocess.run(
        ["bash", "-c", 'set -e; exports=$(scripts/engine env); eval "$exports"; env -0'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise LookupError(f"scripts/engine env ({gen.name}) failed: {done.stderr.strip()}")
    out = dict(item.split("=", 1) for item in done.stdout.split("\0") if "=" in item)
    out.pop("PIPELINE_DAGGER_VERSION", None)  # the SDK and the CLI need only what env set
    return out


def _missing(gen: Generation, env: dict[str, str]) -> str | None:
    """Why ``gen`` cannot run here, or None."""
    if not gen.python.exists():
        return f"{gen.python.relative_to(ROOT)} is missing (scripts/test makes it)"
    host = env.get("_EXPERIMENTAL_DAGGER_RUNNER_HOST", "")
    if host.startswith("unix://"):
        # a socket file an engine left when it stopped refuses connections
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(host.removeprefix("unix://"))
            except OSError as exc:
                return f"the {gen.name} engine is not up ({host}: {exc}): scripts/engine up"
    return None


def _explicitly_selected(config: pytest.Config) -> bool:
    expr = str(config.getoption("markexpr") or "")
    if re.search(r"\bgenerations\b", expr) and not re.search(r"\bnot\s+generations\b", expr):
        return True
    return any(Path(__file__).name in str(arg) for arg in config.args)


@dataclass(frozen=True)
class Export:
    gen: Generation
    out: Path
    report: dict[str, Any]
    sdk: str


@pytest.fixture(scope="module")
def exports(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Export]:
    """Both generations' exports of one commit (its time fixed by copy_example)."""
    if not _explicitly_selected(request.config):
        pytest.skip("needs both Dagger engines: run with -m generations (scripts/test does)")
    gens, envs, missing = _generations(), {}, []
    for gen in gens:
        try:
            envs[gen.name] = _engine_env(gen)
        except LookupError as exc:
            missing.append(str(exc))
            continue
        if (why := _missing(gen, envs[gen.name])) is not None:
            missing.append(why)
    if missing:
        if os.environ.get("CI"):
            pytest.fail("CI=true but " + "; ".join(missing))
        pytest.skip("; ".join(missing))

    tmp = tmp_path_factory.mktemp("generations")
    repo = copy_example(tmp / "repo", services=SERVICES)
    done: dict[str, Export] = {}
    for gen in gens:
        env = envs[gen.name]
        out, report = tmp / f"out-{gen.name}", tmp / f"report-{gen.name}.json"
        # a scope of its own and --no-cache: the result cache replays nothing, each builds
        scope = f"generations-{gen.name}-{time.time_ns()}"
        run = subprocess.run(
            [str(gen.python), "-m", "pipeline", "export", *SERVICES, "--out", str(out),
             "--report", str(report), "--project-dir", str(repo), "--cache-scope", scope,
             "--base-image", env["PIPELINE_BASE_IMAGE"], "--no-cache"],
            capture_output=True, text=True, cwd=tmp, env=env, check=False,
        )  # fmt: skip
        assert run.returncode == 0, f"{gen.name}: {run.stderr[-4000:]}"
        done[gen.name] = Export(gen, out, json.loads(report.read_text()), _sdk_version(gen.python))
    return done


# --- reading and comparing OCI layouts (stdlib only: no pipeline module) ---------------------


def _blob(tar: tarfile.TarFile, digest: str) -> bytes:
    member = tar.extractfile("blobs/sha256/" + digest.removeprefix("sha256:"))
    assert member is not None, f"{digest} missing from {tar.name!r}"
    return member.read()


@dataclass(frozen=True)
class Layout:
    tarball: Path
    digest: str  # the image manifest's
    config_digest: str
    config: dict[str, Any]
    layers: tuple[str, ...]


def _layout(tarball: Path) -> Layout:
    with tarfile.open(tarball) as tar:
        member = tar.extractfile("index.json")
        assert member is not None, f"no index.json in {tarball}"
        [desc] = json.load(member)["manifests"]
        manifest = _blob(tar, desc["digest"])
        assert "sha256:" + hashlib.sha256(manifest).hexdigest() == desc["digest"]
        data = json.loads(manifest)
        config = json.loads(_blob(tar, data["config"]["digest"]))
    layers = tuple(layer["digest"] for layer in data["layers"])
    return Layout(tarball, desc["digest"], data["config"]["digest"], config, layers)


def _flat(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key in value for k, v in _flat(value[key], f"{path}.{key}").items()}
    if isinstance(value, list):
        return {
            k: v for i, item in enumerate(value) for k, v in _flat(item, f"{path}[{i}]").items()
        }
    return {path or ".": value}


def _config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    fa, fb = _flat(a), _flat(b)
    return [
        f"{key}: {fa.get(key, '<absent>')!r} != {fb.get(key, '<absent>')!r}"
        for key in sorted(fa.keys() | fb.keys())
        if fa.get(key, "<absent>") != fb.get(key, "<absent>")
    ]


def _entries(tarball: Path, digest: str) -> dict[str, str]:
    """A layer's entries: name -> kind, mode, owner, mtime, size and content digest."""
    with tarfile.open(tarball) as outer:
        blob = _blob(outer, digest)
    if blob[:2] == b"\x1f\x8b":
        blob = gzip.decompress(blob)
    entries = {}
    with tarfile.open(fileobj=io.BytesIO(blob)) as layer:
        for m in layer:
            data = layer.extractfile(m) if m.isfile() else None
            content = hashlib.sha256(data.read()).hexdigest()[:12] if data else m.linkname
            entries[m.name] = (
                f"type={m.type.decode()} mode={m.mode:o} uid={m.uid} gid={m.gid} "
                f"mtime={m.mtime} size={m.size} {content}"
            )
    return entries


def _shown(diff: list[str]) -> list[str]:
    more = [f"... {len(diff) - SHOWN} more"] if len(diff) > SHOWN else []
    return [f"    {line}" for line in [*diff[:SHOWN], *more]]


def _differences(gens: tuple[str, str], a: Layout, b: Layout) -> list[str]:
    """What differs between two images, part by part: config, then each layer's entries."""
    lines = [f"manifest {a.digest} ({gens[0]}) != {b.digest} ({gens[1]})"]
    if a.config_digest != b.config_digest:
        diff = _config_diff(a.config, b.config)
        lines.append(f"  config {a.config_digest} != {b.config_digest}:")
        lines += _shown(diff)
    if len(a.layers) != len(b.layers):
        lines.append(f"  {len(a.layers)} layers != {len(b.layers)}")
    for i, (la, lb) in enumerate(zip(a.layers, b.layers, strict=False)):
        if la == lb:
            continue
        ea, eb = _entries(a.tarball, la), _entries(b.tarball, lb)
        diff = [
            f"{name}: {ea.get(name, '<absent>')} != {eb.get(name, '<absent>')}"
            for name in sorted(ea.keys() | eb.keys())
            if ea.get(name) != eb.get(name)
        ]
        if not diff and list(ea) != list(eb):
            diff = ["same entries in another order"]
        lines.append(f"  layer {i}: {la} != {lb}:")
        lines += _shown(diff or ["same entries: the compression differs"])
    return lines


# --- the tests ------------------------------------------------------------------------------


def test_each_generation_built_every_service_with_its_own_sdk(exports: dict[str, Export]) -> None:
    assert [e.sdk[:4] for e in exports.values()] == ["0.11", "0.21"]
    for name, export in exports.items():
        results = {s["service"]: s for s in export.report["services"]}
        assert sorted(results) == sorted(SERVICES), name
        for service, result in results.items():
            assert result["status"] == "ok", (name, service, result["reason"])
            assert not result["cached"], (name, service)  # nothing replayed: it was built
            assert result["reused_checks"] == [], (name, service)
            assert result["tests"] == {"unit": True, "smoke": True, "health": True}, (name, service)
    # the same base image, by digest, on both: what differs below is the engines' doing
    assert len({e.report["base_image"] for e in exports.values()}) == 1


def test_images_are_byte_identical_across_generations(exports: dict[str, Export]) -> None:
    (ga, a), (gb, b) = exports.items()
    failures, digests = [], {}
    for service in SERVICES:
        la, lb = _layout(a.out / f"{service}.tar"), _layout(b.out / f"{service}.tar")
        digests[service] = (la.digest, lb.digest)
        if la.digest != lb.digest:
            failures += [f"{service}:", *(f"  {line}" for line in _differences((ga, gb), la, lb))]
    # what each report says is what its tarballs hold
    for index, export in enumerate((a, b)):
        for result in export.report["services"]:
            assert result["image"]["digest"] == digests[result["service"]][index]
    if failures:
        pytest.fail(
            "images differ across Dagger generations:\n" + "\n".join(failures), pytrace=False
        )


def test_sbom_and_provenance_beside_each_export_on_both(exports: dict[str, Export]) -> None:
    for name, export in exports.items():
        for service in SERVICES:
            digest = _layout(export.out / f"{service}.tar").digest.removeprefix("sha256:")
            sbom = json.loads((export.out / f"{service}.cdx.json").read_text())
            assert sbom["bomFormat"] == "CycloneDX", (name, service)
            assert sbom["metadata"]["component"]["hashes"][0]["content"] == digest, (name, service)
            assert sbom["components"], (name, service)
            statement = json.loads((export.out / f"{service}.provenance.json").read_text())
            assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
            assert statement["subject"] == [{"name": service, "digest": {"sha256": digest}}]
            builder = statement["predicate"]["runDetails"]["builder"]
            assert builder["version"]["dagger-io"] == export.sdk, (name, service)
