import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import version

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.conftest import ROOT


def extra_pin(extra: str, package: str = "dagger-io") -> str:
    """The version of ``package`` pinned by one of pyproject's two (conflicting) extras."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    pins = (re.fullmatch(r"([\w-]+)(?:\[[\w,-]+\])?==(\S+)", d) for d in extras[extra])
    return next(m[2] for m in pins if m and m[1] == package)


def test_engine_version_matches_dagger_v021_pin():
    engine = json.loads((ROOT / "dagger.json").read_text())["engineVersion"]
    assert f"v{extra_pin('dagger-v021')}" == engine


def test_installed_dagger_io_is_one_of_the_extra_pins():
    # .venv has dagger-v021 (dagger.json's engine), .venv-dagger-v011 the other one.
    installed = version("dagger-io")
    assert installed in {extra_pin("dagger-v011"), extra_pin("dagger-v021")}
    if installed == extra_pin("dagger-v011"):
        # gql 4's introspection query is rejected by the v0.11 engine.
        assert version("gql") == extra_pin("dagger-v011", "gql")


def dependency_range(package: str = "dagger-io") -> SpecifierSet:
    """The range pyproject's core dependencies give ``package``."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    found = [Requirement(d) for d in deps if Requirement(d).name == package]
    assert len(found) == 1, deps
    return found[0].specifier


def test_dagger_io_range_admits_the_tested_generations_only():
    # A user installing without an extra gets an SDK of a generation the suite ran on, or none:
    # 0.12 to 0.20 (and 0.22 on) are refused by the resolver, not met at run time.
    span = dependency_range()
    pins = [Version(extra_pin(extra)) for extra in ("dagger-v011", "dagger-v021")]
    assert all(span.contains(pin) for pin in pins), (span, pins)
    generations = {pin.release[:2] for pin in pins}
    for minor in range(30):
        for patch in range(15):
            candidate = Version(f"0.{minor}.{patch}")
            if span.contains(candidate):
                assert candidate.release[:2] in generations, (span, candidate)


UV_REQUIREMENTS = ROOT / "scripts" / "uv-requirements.txt"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_host_uv_is_the_images_uv_and_installs_only_by_its_hashes(tmp_path):
    # scripts/setup and the workflow install uv from this file; a fresh host has no uv.
    from pipeline.core.inputs import UV_VERSION

    text = UV_REQUIREMENTS.read_text()
    assert re.search(rf"^uv=={re.escape(UV_VERSION)} \\$", text, re.MULTILINE), text
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps"]
    pip += ["--disable-pip-version-check", "--require-hashes"]
    done = run(*pip, "-r", str(UV_REQUIREMENTS))
    assert done.returncode == 0, done.stderr
    shown = run(str(venv / "bin" / "uv"), "--version")
    assert shown.stdout.split()[:2] == ["uv", UV_VERSION], shown.stdout
    # One changed digit in every hash: pip refuses the download.
    tampered = tmp_path / "tampered.txt"
    tampered.write_text(re.sub(r"sha256:(.)", lambda m: "sha256:" + "01"[m[1] == "0"], text))
    python = str(venv / "bin" / "python")
    assert run(python, "-m", "pip", "uninstall", "-q", "-y", "uv").returncode == 0
    refused = run(*pip, "-r", str(tampered))
    assert refused.returncode != 0
    assert "DO NOT MATCH THE HASHES" in refused.stderr, refused.stderr
