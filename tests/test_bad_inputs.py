"""Every bad input is a clear error: exit 2, no traceback, the file and the field named with
the fix, and nothing written. One row per input, each against a small valid monorepo."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from tests.conftest import ROOT, git, run_pipeline

if TYPE_CHECKING:
    from collections.abc import Callable

CONFIG = 'services = ["s/*"]\n[tiers.base]\nrequirements = ["req/base.txt"]\n'
MANIFEST = 'tier = "base"\ncommand = ["python", "-m", "a"]\n'
WEB = MANIFEST + 'port = 8000\nhealth = { http = "/health" }\n'
M, C = "s/a/service.toml", "pipeline.toml"


def _cfg(extra: str) -> dict[str, str]:
    return {C: CONFIG + extra}


def _top(extra: str) -> dict[str, str]:
    return {C: extra + CONFIG}


def _svc(extra: str, base: str = MANIFEST) -> dict[str, str]:
    return {M: base + extra}


# name: (files written over the valid monorepo, what stderr must say)
CASES: dict[str, tuple[dict[str, str | bytes], str]] = {
    # the root config
    "unknown top-level field": (_top("colour = 1\n"), f"{C}: colour: unknown field"),
    "services as a string": ({C: 'services = "s/*"\n[tiers.base]\n'}, f"{C}: services:"),
    "absolute services glob": ({C: 'services = ["/etc/*"]\n'}, f"{C}: services[0]"),
    "services glob leaving the project": ({C: 'services = ["../x/*"]\n'}, f"{C}: services[0]"),
    "services glob matching nothing": ({C: 'services = ["none/*"]\n'}, f"{C}: services:"),
    "string for a bool": (_top('compile_bytecode = "yes"\n'), f"{C}: compile_bytecode:"),
    "number for a bool": (_top("compile_bytecode = 1\n"), f"{C}: compile_bytecode:"),
    "uid below 1000": (_top("uid = 5\n"), f"{C}: uid:"),
    "uid as a string": (_top('uid = "10001"\n'), f"{C}: uid:"),
    "user no account name": (_top('user = "Root User"\n'), f"{C}: user:"),
    "cache scope with a space": (_top('cache_scope = "a b"\n'), f"{C}: cache_scope:"),
    "source url as a number": (_top("source_url = 5\n"), f"{C}: source_url:"),
    "test requirements as a string": (
        _top('test_requirements = "t.txt"\n'),
        f"{C}: test_requirements",
    ),
    "test requirements missing": (
        _top('test_requirements = ["t.txt"]\n'),
        f"{C}: test_requirements",
    ),
    "test requirements outside": (
        _top('test_requirements = ["/etc/hostname"]\n'),
        f"{C}: test_requirements",
    ),
    "tiers as a number": ({C: 'services = ["s/*"]\ntiers = 3\n'}, f"{C}: tiers"),
    "tier name in capitals": (_cfg('[tiers.GPU]\nextends = "base"\n'), f"{C}: tiers.GPU"),
    "tier extending an unknown tier": (_cfg('[tiers.web]\nextends = "nope"\n'), f"{C}: tiers.web"),
    "tier without a parent": (_cfg("[tiers.web]\n"), f"{C}: tiers.web"),
    "tier cycle": (_cfg('[tiers.x]\nextends = "y"\n[tiers.y]\nextends = "x"\n'), f"{C}: tiers."),
    "base tier extending": (
        {C: 'services = ["s/*"]\n[tiers.base]\nextends = "web"\n[tiers.web]\nextends = "base"\n'},
        f"{C}: tiers.",
    ),
    "tier requirements missing": (
        {C: 'services = ["s/*"]\n[tiers.base]\nrequirements = ["req/nope.txt"]\n'},
        f"{C}: tiers.base.requirements",
    ),
    "tier requirements absolute": (
        {C: 'services = ["s/*"]\n[tiers.base]\nrequirements = ["/etc/hostname"]\n'},
        f"{C}: tiers.base.requirements[0]: /etc/hostname is outside the project",
    ),
    "tier requirements leaving the project": (
        {C: 'services = ["s/*"]\n[tiers.base]\nrequirements = ["../r.txt"]\n'},
        f"{C}: tiers.base.requirements[0]",
    ),
    "tier apt package not a Debian name": (
        {C: 'services = ["s/*"]\n[tiers.base]\napt = ["Bad_Pkg"]\n'},
        f"{C}: tiers.base.apt",
    ),
    "tier build_apt not a list": (
        {C: 'services = ["s/*"]\n[tiers.base]\nbuild_apt = "gcc"\n'},
        f"{C}: tiers.base.build_apt",
    ),
    "tier unknown field": (
        {C: 'services = ["s/*"]\n[tiers.base]\npackages = ["x"]\n'},
        f"{C}: tiers.base.packages: unknown field",
    ),
    "config not TOML": ({C: "services = [\n"}, f"{C}:"),
    "config not UTF-8": ({C: b'services = ["\xff"]\n'}, f"{C}: is not UTF-8 text"),
    "two configs": (
        {"pyproject.toml": '[tool.pipeline]\nservices = ["s/*"]\n'},
        "pyproject.toml: tool.pipeline: is a second configuration",
    ),
    # a service's manifest
    "manifest unknown field": (_svc("colour = 1\n"), f"{M}: colour: unknown field"),
    "manifest missing tier": ({M: 'command = ["x"]\n'}, f"{M}: tier:"),
    "manifest missing command": ({M: 'tier = "base"\n'}, f"{M}: command:"),
    "manifest unknown tier": ({M: 'tier = "gpu"\ncommand = ["x"]\n'}, f"{M}: tier:"),
    "empty command": ({M: 'tier = "base"\ncommand = []\n'}, f"{M}: command: is empty"),
    "blank shell command": ({M: 'tier = "base"\ncommand = "  "\n'}, f"{M}: command:"),
    "number for a command": ({M: 'tier = "base"\ncommand = 5\n'}, f"{M}: command:"),
    "number in a command": ({M: 'tier = "base"\ncommand = ["python", 1]\n'}, f"{M}: command"),
    "bool for a port": (_svc("port = true\n"), f"{M}: port:"),
    "port 0": (_svc("port = 0\n"), f"{M}: port:"),
    "port past 65535": (_svc("port = 70000\n"), f"{M}: port:"),
    "port as a string": (_svc('port = "8000"\n'), f"{M}: port:"),
    "port without a probe": (_svc("port = 8000\n"), f"{M}: health"),
    "health path without a port": (_svc('health_path = "/health"\n'), f"{M}: health_path"),
    "health path without a slash": (
        _svc('port = 1\nhealth_path = "health"\n'),
        f"{M}: health_path",
    ),
    "http probe without a slash": (
        _svc('port = 1\nhealth = { http = "x" }\n'),
        f"{M}: health.http",
    ),
    "two probe kinds": (_svc('port = 1\nhealth = { http = "/", tcp = true }\n'), f"{M}: health"),
    "no probe kind": (_svc("port = 1\nhealth = { timeout = 3 }\n"), f"{M}: health"),
    "probe timeout 0": (
        _svc("health = { tcp = true, timeout = 0 }\n", WEB.split("health")[0]),
        f"{M}: health.timeout",
    ),
    "negative start period": (
        _svc("health = { tcp = true, start_period = -1 }\n", WEB.split("health")[0]),
        f"{M}: health.start_period",
    ),
    "probe unknown field": (
        _svc("health = { tcp = true, retries = 3 }\n", WEB.split("health")[0]),
        f"{M}: health.retries",
    ),
    "health neither table nor none": (_svc('port = 1\nhealth = "sometimes"\n'), f"{M}: health"),
    "probe and health path both": (_svc('health_path = "/x"\n', WEB), f"{M}: health"),
    "relative workdir": (_svc('workdir = "app"\n'), f"{M}: workdir:"),
    "name not an image name": (_svc('name = "My App"\n'), f"{M}: name:"),
    "folder name not an image name": (
        {"s/My App/service.toml": MANIFEST},
        "s/My App/service.toml: name",
    ),
    "duplicate service names": (
        {"s/b/service.toml": MANIFEST + 'name = "a"\n'},
        "s/b/service.toml: name:",
    ),
    "negative size budget": (_svc("size_budget_mb = -1\n"), f"{M}: size_budget_mb:"),
    "apt package not a Debian name": (_svc('apt = ["Bad Pkg"]\n'), f"{M}: apt"),
    "tests as a number": (_svc("tests = 5\n"), f"{M}: tests:"),
    "smoke as a string list of numbers": (_svc("smoke = [1, 2]\n"), f"{M}: smoke"),
    "empty env name": (_svc('env = { "" = "1" }\n'), f"{M}: env."),
    "env name with a space": (_svc('env = { "A B" = "1" }\n'), f"{M}: env.A B"),
    "env value a number": (_svc("env = { A = 1 }\n"), f"{M}: env.A"),
    "include as a string": (_svc('include = "a/**"\n'), f"{M}: include:"),
    "include matching nothing": (_svc('include = ["nope/**"]\n'), f"{M}: include: matches no file"),
    "exclude as a number": (_svc("exclude = 3\n"), f"{M}: exclude:"),
    "requirements missing": (_svc('requirements = "r.txt"\n'), f"{M}: requirements:"),
    "requirements outside the project": (
        _svc('requirements = "../../../r.txt"\n'),
        f"{M}: requirements:",
    ),
    "requirements.in": (
        {**_svc('requirements = "requirements.in"\n'), "s/a/requirements.in": "six\n"},
        f"{M}: requirements:",
    ),
    "requirement against the tier's pin": (
        {**_svc('requirements = "requirements.txt"\n'), "s/a/requirements.txt": "six==1.15.0\n"},
        (
            "s/a/requirements.txt: six: service 'a' asks for six==1.15.0, but tier 'base' pins "
            "six==1.16.0"
        ),
    ),
    "NUL in a shell command": (
        {M: 'tier = "base"\ncommand = "python -m a\\u0000"\n'},
        f"{M}: command: the command holds a NUL character",
    ),
    "NUL in a smoke command": (
        _svc('smoke = ["python", "-c", "\\u0000"]\n'),
        f"{M}: smoke: argument 3 holds a NUL character",
    ),
    "NUL in a test command": (
        _svc('tests = ["pytest\\u0000"]\n'),
        f"{M}: tests: argument 1 holds a NUL character",
    ),
    "NUL in an env value": (
        _svc('env = { A = "x\\u0000y" }\n'),
        f"{M}: env: the value of A holds a NUL character",
    ),
    "engines in the config with an http URL": (
        _top('engines = "a=http://h:1"\n'),
        f"{C}: engines: 'a=http://h:1' has scheme 'http'",
    ),
    "base image not an image reference": (
        _top('base_image = "python:3.11 slim"\n'),
        f"{C}: base_image: 'python:3.11 slim' is not an image reference",
    ),
    "manifest not TOML": ({M: "tier = \n"}, f"{M}:"),
    "manifest not UTF-8": ({M: b'tier = "base"\ncommand = ["\xff"]\n'}, f"{M}: is not UTF-8 text"),
}


def _write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(tmp_path: Path, case: str):
    files, message = CASES[case]
    repo = tmp_path / "repo"
    _write(repo, {C: CONFIG, M: MANIFEST, "req/base.txt": "six==1.16.0\n", "s/a/a/__init__.py": ""})
    _write(repo, files)
    before = {p: p.stat().st_mtime_ns for p in repo.rglob("*")}
    report = tmp_path / "report.json"
    done = run_pipeline("build", "--project-dir", str(repo), "--report", str(report))
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr, done.stderr
    assert "fix:" in done.stderr
    assert "Traceback" not in done.stderr
    assert not report.exists()
    assert {p: p.stat().st_mtime_ns for p in repo.rglob("*")} == before


# ---- runs: options, environment values, links and carried caches, given as a hurried user or
# an attacker gives them. Each row runs on a committed copy of the same small monorepo, with an
# engine that is not there: no row needs one, and a row that reached for it fails.

NO_ENGINE = {
    "_EXPERIMENTAL_DAGGER_RUNNER_HOST": "unix:///nonexistent/pipeline-bad-inputs.sock",
    "_EXPERIMENTAL_DAGGER_CLI_BIN": "/nonexistent/dagger",
}
UNSET = (
    "DAGGER_SESSION_PORT",
    "DAGGER_SESSION_TOKEN",
    "PIPELINE_JOBS",
    "PIPELINE_ENGINES",
    "PIPELINE_CACHE_REGISTRY",
    "PIPELINE_CACHE_REGISTRY_MODE",
    "PIPELINE_FALLBACK_SCOPE",
    "PIPELINE_CACHE_SCOPE",
    "PIPELINE_PROJECT_DIR",
    "PIPELINE_VERSION",
    "PIPELINE_REGISTRY",
    "PIPELINE_REGISTRY_USERNAME",
    "PIPELINE_REGISTRY_PASSWORD",
    "PIPELINE_INDEX_URL",
    "PIPELINE_CA_BUNDLE",
)
IMPORT = ("cache", "import", "{tmp}/carried", "--cache-scope", "x")
EXPORT = ("cache", "export", "--cache-scope", "x")
X = "{tmp}/carried/x"  # the export's folder

# A tar member: (kind, name, bytes of a file or target of a link)
Member = tuple[str, str, "str | bytes"]
KINDS = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "sym": tarfile.SYMTYPE,
    "hard": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def _tar(path: Path, members: list[Member]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for kind, name, what in members:
            info = tarfile.TarInfo(name)
            info.type = KINDS[kind]
            data = what if isinstance(what, bytes) else b""
            if isinstance(what, str):
                info.linkname = what
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


VOLUME: list[Member] = [("dir", "./archive-v0", ""), ("file", "./archive-v0/w/a.py", b"A = 1\n")]
RESULTS: list[Member] = [("file", "./results/k.json", b'{"format": 2}\n')]


def _export(
    volume: list[Member] = VOLUME,
    results: list[Member] = RESULTS,
    manifest: Callable[[dict[str, Any]], object] = lambda m: m,
    then: Callable[[Path], object] = lambda _: None,
) -> Callable[[Path], None]:
    """An export of scope x in {tmp}/carried as `cache export` writes one, spoiled by
    ``volume`` (uv's tarball), ``results``, ``manifest`` (given the right one) or ``then``
    (given the export's folder)."""

    def make(tmp: Path) -> None:
        folder = tmp / "carried/x"
        folder.mkdir(parents=True)
        _tar(folder / "uv.tar.gz", volume)
        _tar(folder / "results.tar.gz", results)
        sizes = {n: (folder / f"{n}.tar.gz").stat().st_size for n in ("uv", "results")}
        right = {"scope": "x", "sizes": sizes, "left_out": ["apt-lists", "apt-cache", "pip"]}
        (folder / "manifest.json").write_text(json.dumps(manifest(right)))
        then(folder)

    return make


def _field(key: str, value: object) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda m: {**m, key: value}


def _size(name: str, value: object) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda m: {**m, "sizes": {**m["sizes"], name: value}}


def _record(folder: Path, name: str) -> None:
    """The manifest saying the size ``name``'s tarball has now, as if exported so."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sizes"][name] = (folder / f"{name}.tar.gz").stat().st_size
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _cut(folder: Path) -> None:
    """uv's tarball cut in half, the manifest saying the cut size: a copy that stopped and
    was trusted."""
    packed = folder / "uv.tar.gz"
    packed.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    _record(folder, "uv")


def _not_gzip(folder: Path) -> None:
    (folder / "results.tar.gz").write_bytes(b"\x1f\x8bnot gzip")
    _record(folder, "results")


def _replace(rel: str, make: Callable[[Path], object]) -> Callable[[Path], None]:
    """``rel`` (of the export's folder) removed, then made again by ``make``."""

    def then(folder: Path) -> None:
        (folder / rel).unlink()
        make(folder / rel)

    return then


def _link(rel: str, target: str) -> Callable[[Path], None]:
    """``rel`` of {tmp} (replaced if there) as a symlink to ``target``, {tmp} filled in."""

    def make(tmp: Path) -> None:
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        path.unlink(missing_ok=True)
        path.symlink_to(target.format(tmp=tmp))

    return make


def _put(rel: str, data: str | bytes = "x\n") -> Callable[[Path], None]:
    """A file at ``rel`` of {tmp} (a folder when ``rel`` ends with '/')."""

    def make(tmp: Path) -> None:
        path = tmp / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return make


def _all(*makes: Callable[[Path], object]) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        for each in makes:
            each(tmp)

    return make


class Row(NamedTuple):
    args: tuple[str, ...]  # {tmp} and {repo} filled in; --project-dir {repo} added
    message: str  # what stderr must say: the file and field, or the option, {tmp} filled in
    env: dict[str, str] | None = None
    make: Callable[[Path], object] | None = None  # spoils {tmp} (the repo is {tmp}/repo)
    files: dict[str, str | bytes] | None = None  # written over the monorepo, committed
    never_shown: str | None = None  # what the output must never show (a credential)


RUNS: dict[str, Row] = {
    # environment values and options
    "PIPELINE_JOBS=abc": Row(
        ("build",), "PIPELINE_JOBS: 'abc' is not a number", {"PIPELINE_JOBS": "abc"}
    ),
    "PIPELINE_JOBS=0": Row(("build",), "PIPELINE_JOBS must be at least 1", {"PIPELINE_JOBS": "0"}),
    "--jobs -2": Row(("build", "--jobs", "-2"), "--jobs must be at least 1"),
    "--jobs 1.5": Row(("build", "--jobs", "1.5"), "--jobs: '1.5' is not a number"),
    "--growth-warning abc": Row(
        ("build", "--growth-warning", "abc"), "--growth-warning: 'abc' is not a number; fix:"
    ),
    "PIPELINE_GROWTH_WARNING=-5": Row(
        ("build",),
        "PIPELINE_GROWTH_WARNING: -5 is out of range; fix: give a percentage from 0 to 1000",
        {"PIPELINE_GROWTH_WARNING": "-5"},
    ),
    "PIPELINE_ENGINES without a port": Row(
        ("build",),
        "PIPELINE_ENGINES: 'a=tcp://1.2.3.4' needs a host and a port number",
        {"PIPELINE_ENGINES": "a=tcp://1.2.3.4"},
    ),
    "--engines with one name twice": Row(
        ("build", "--engines", "a=tcp://h:1,a=tcp://h:2"), "--engines: 'a=tcp://h:2'"
    ),
    "--cache-registry with a tag": Row(
        ("build", "--cache-registry", "ghcr.io/acme/cache:v1"),
        "--cache-registry: 'ghcr.io/acme/cache:v1' is not a registry repository",
    ),
    "PIPELINE_CACHE_REGISTRY_MODE=write": Row(
        ("build",),
        "PIPELINE_CACHE_REGISTRY_MODE: 'write' is no mode; fix: give read-write or read",
        {"PIPELINE_CACHE_REGISTRY_MODE": "write"},
    ),
    "--report-html into a folder": Row(
        ("build", "--report-html", "/tmp"), "--report-html: /tmp is a folder; fix: name a file"
    ),
    "PIPELINE_CACHE_SCOPE=../../x": Row(
        ("build",),
        "PIPELINE_CACHE_SCOPE: '../../x' cannot be a cache scope",
        {"PIPELINE_CACHE_SCOPE": "../../x"},
    ),
    "--cache-scope a/b": Row(("build", "--cache-scope", "a/b"), "--cache-scope: 'a/b' cannot be"),
    "cache_scope = '..' in the config": Row(
        ("build",), f"{C}: cache_scope:", files=_top('cache_scope = ".."\n')
    ),
    "PIPELINE_BASE_IMAGE='Not An Image'": Row(
        ("build",),
        "PIPELINE_BASE_IMAGE: 'Not An Image' is not an image reference",
        {"PIPELINE_BASE_IMAGE": "Not An Image"},
    ),
    "--base-image with a shell command": Row(
        ("build", "--base-image", "python:3.11; rm -rf /"),
        "--base-image: 'python:3.11; rm -rf /' is not an image",
    ),
    "base_image no image in the config": Row(
        ("build",),
        f"{C}: base_image: 'Not An Image' is not an image reference",
        {"PIPELINE_BASE_IMAGE": ""},
        files=_top('base_image = "Not An Image"\n'),
    ),
    "PIPELINE_PROJECT_DIR at a file": Row(
        ("build",),
        "PIPELINE_PROJECT_DIR {repo}/pipeline.toml is not a directory",
        {"PIPELINE_PROJECT_DIR": "{repo}/pipeline.toml"},
    ),
    "--project-dir that is not there": Row(
        ("build", "--project-dir", "{tmp}/nowhere"),
        "--project-dir {tmp}/nowhere is not a directory",
    ),
    "PIPELINE_VERSION with a space": Row(
        ("build",), "PIPELINE_VERSION: '1 2' cannot be an image tag", {"PIPELINE_VERSION": "1 2"}
    ),
    "--version of 129 characters": Row(("build", "--version", "v" * 129), "cannot be an image tag"),
    "--changed-since an unknown ref": Row(
        ("build", "--changed-since", "no-such-ref"),
        "--changed-since no-such-ref: git knows no such commit",
    ),
    "--changed-since an option for git": Row(
        ("plan", "--changed-since=--output={tmp}/owned"),
        "--changed-since --output={tmp}/owned: git knows",
    ),
    "--report onto a folder": Row(
        ("build", "--report", "{tmp}/reports"),
        "--report: {tmp}/reports is a folder",
        make=_put("reports/"),
    ),
    "--report below a file": Row(
        ("build", "--report", "{repo}/pipeline.toml/r.json"),
        "--report: cannot write in {repo}/pipeline.toml",
    ),
    "--out onto a file": Row(
        ("export", "--out", "{tmp}/out.tar"),
        "--out: cannot write in {tmp}/out.tar",
        make=_put("out.tar"),
    ),
    "--out below a file": Row(
        ("export", "--out", "{tmp}/out.tar/images"),
        "--out: cannot write in {tmp}/out.tar/images",
        make=_put("out.tar"),
    ),
    "an unknown service": Row(("build", "nosuch"), "unknown service 'nosuch'; the services are: a"),
    "an unknown tier": Row(("build", "--tier", "gpu"), "unknown tier 'gpu'; the tiers are: base"),
    "publish --registry 'Not A Ref'": Row(
        ("publish", "--registry", "Not A Ref"), "--registry: 'Not A Ref'"
    ),
    "publish to a registry URL": Row(
        ("publish", "--registry", "https://ghcr.io/acme"),
        "'https://ghcr.io/acme' is not a registry",
    ),
    "PIPELINE_REGISTRY with a tag": Row(
        ("publish",),
        "PIPELINE_REGISTRY: 'ghcr.io/acme:latest' is not a registry",
        {"PIPELINE_REGISTRY": "ghcr.io/acme:latest"},
    ),
    "publish a version no tag can hold": Row(
        ("publish", "--registry", "ghcr.io/acme", "--version", "1.0 beta"),
        "'1.0 beta' cannot be an image tag",
    ),
    "verify 'Not A Ref'": Row(
        ("verify", "Not A Ref"), "verify: 'Not A Ref' is not an image reference"
    ),
    "PIPELINE_CA_BUNDLE not there": Row(
        ("build",),
        "PIPELINE_CA_BUNDLE: {tmp}/no-ca.pem does not exist",
        {"PIPELINE_CA_BUNDLE": "{tmp}/no-ca.pem"},
    ),
    "PIPELINE_CA_BUNDLE a folder": Row(
        ("build",), "PIPELINE_CA_BUNDLE: {tmp} is not a file", {"PIPELINE_CA_BUNDLE": "{tmp}"}
    ),
    "PIPELINE_CA_BUNDLE holding no certificate": Row(
        ("export", "--out", "{tmp}/out"),
        "PIPELINE_CA_BUNDLE: {tmp}/ca.pem holds no PEM certificate",
        {"PIPELINE_CA_BUNDLE": "{tmp}/ca.pem"},
        make=_put("ca.pem", "proxy.example.com:3128\n"),
    ),
    "PIPELINE_CA_BUNDLE not UTF-8": Row(
        ("build",),
        "PIPELINE_CA_BUNDLE: {tmp}/ca.der is not UTF-8 text",
        {"PIPELINE_CA_BUNDLE": "{tmp}/ca.der"},
        make=_put("ca.der", b"0\x82\x03\xff\xfe"),
    ),
    "PIPELINE_INDEX_URL no URL": Row(
        ("build",), "PIPELINE_INDEX_URL: is not an http(s) URL", {"PIPELINE_INDEX_URL": "not a url"}
    ),
    "PIPELINE_INDEX_URL credentials without a scheme": Row(
        ("publish", "--registry", "localhost:5000/x"),
        "PIPELINE_INDEX_URL: is not an http(s) URL",
        {"PIPELINE_INDEX_URL": "ci:tok-s3cret@pypi.example.com/simple"},
        never_shown="s3cret",
    ),
    "PIPELINE_INDEX_URL of another scheme": Row(
        ("build",),
        "PIPELINE_INDEX_URL: is not an http(s) URL",
        {"PIPELINE_INDEX_URL": "ftp://ci:tok-s3cret@pypi.example.com/simple"},
        never_shown="s3cret",
    ),
    "PIPELINE_INDEX_URL with no host": Row(
        ("build",),
        "PIPELINE_INDEX_URL: is not an http(s) URL",
        {"PIPELINE_INDEX_URL": "https://ci:tok-s3cret@/simple"},
        never_shown="s3cret",
    ),
    "PIPELINE_INDEX_URL with a port that is no number": Row(
        ("build",),
        "PIPELINE_INDEX_URL: is not an http(s) URL",
        {"PIPELINE_INDEX_URL": "https://ci:tok-s3cret@pypi.example.com:s3cret/simple"},
        never_shown="s3cret",
    ),
    # files and links
    "service.toml a link out of the project": Row(
        ("build",),
        f"{M}: include: {{repo}}/{M} is a symlink to {{tmp}}/elsewhere/service.toml",
        make=_all(
            _put("elsewhere/service.toml", MANIFEST),
            _link(f"repo/{M}", "{tmp}/elsewhere/service.toml"),
        ),
    ),
    "service requirements a link out of the project": Row(
        ("build",),
        f"{M}: requirements: s/a/requirements.txt is outside the project",
        files=_svc('requirements = "requirements.txt"\n'),
        make=_link("repo/s/a/requirements.txt", "/etc/hostname"),
    ),
    "tier requirements a link out of the project": Row(
        ("build",),
        f"{C}: tiers.base.requirements[0]: req/base.txt is outside the project",
        make=_link("repo/req/base.txt", "/etc/hostname"),
    ),
    "test requirements a link out of the project": Row(
        ("build",),
        f"{C}: test_requirements[0]: t.txt is outside the project",
        files=_top('test_requirements = ["t.txt"]\n'),
        make=_link("repo/t.txt", "/etc/hostname"),
    ),
    "source file a link out of the project": Row(
        ("build",),
        f"{M}: include: {{repo}}/s/a/a/evil.py is a symlink to /etc/passwd",
        make=_link("repo/s/a/a/evil.py", "/etc/passwd"),
    ),
    "source file a dangling link": Row(
        ("build",),
        f"{M}: include: {{repo}}/s/a/a/gone.py is a symlink to nothing.py",
        make=_link("repo/s/a/a/gone.py", "nothing.py"),
    ),
    "source file a link to itself": Row(
        ("build",),
        f"{M}: include: {{repo}}/s/a/a/loop is a symlink to loop, a loop of links",
        make=_link("repo/s/a/a/loop", "loop"),
    ),
    "two source links in a loop": Row(
        ("build",),
        f"{M}: include: {{repo}}/s/a/a/one is a symlink to two, a loop of links",
        make=_all(_link("repo/s/a/a/one", "two"), _link("repo/s/a/a/two", "one")),
    ),
    "a folder link in a loop": Row(
        ("plan",),
        f"{M}: include: {{repo}}/s/a/a/sub is a symlink to sub/x, a loop of links",
        make=_link("repo/s/a/a/sub", "sub/x"),
    ),
    "service requirements a link loop": Row(
        ("build",),
        f"{M}: requirements: s/a/requirements.txt is a symlink in a loop of links",
        files=_svc('requirements = "requirements.txt"\n'),
        make=_link("repo/s/a/requirements.txt", "requirements.txt"),
    ),
    "tier requirements a link loop": Row(
        ("build",),
        f"{C}: tiers.base.requirements[0]: req/base.txt is a symlink in a loop of links",
        make=_link("repo/req/base.txt", "base.txt"),
    ),
    "pipeline.toml a folder": Row(
        ("build",),
        "{repo}: no pipeline configuration found",
        make=_all(lambda tmp: (tmp / "repo" / C).unlink(), _put(f"repo/{C}/")),
    ),
    "requirements not UTF-8": Row(
        ("build",),
        "s/a/requirements.txt: is not UTF-8 text (byte 3)",
        files={**_svc('requirements = "requirements.txt"\n'), "s/a/requirements.txt": b"six\xff\n"},
    ),
    "tier requirements not UTF-8": Row(
        ("plan",), "req/base.txt: is not UTF-8 text", files={"req/base.txt": b"# caf\xe9\nsix\n"}
    ),
    "service pyproject.toml not TOML": Row(
        ("build",),
        "s/a/pyproject.toml: not valid TOML",
        files={**_svc('requirements = "pyproject.toml"\n'), "s/a/pyproject.toml": "[project\n"},
    ),
    "requirements including a file out of the project": Row(
        ("build",),
        "s/a/requirements.txt: line 1: '-r /etc/hostname' reads another file",
        files={
            **_svc('requirements = "requirements.txt"\n'),
            "s/a/requirements.txt": "-r /etc/hostname\n",
        },
    ),
    "requirements including a file beside them": Row(
        ("build",),
        "s/a/requirements.txt: line 2: '-rother.txt' reads another file",
        files={
            **_svc('requirements = "requirements.txt"\n'),
            "s/a/requirements.txt": "six\n-rother.txt # the rest\n",
            "s/a/other.txt": "attrs\n",
        },
    ),
    "tier requirements with a constraints file": Row(
        ("plan",),
        "req/base.txt: line 1: '-c req/pins.txt' reads another file",
        files={"req/base.txt": "-c req/pins.txt\nsix\n", "req/pins.txt": "six==1.16.0\n"},
    ),
    "test requirements including another": Row(
        ("build",),
        "t.txt: line 1: '--requirement=req/base.txt' reads another file",
        files={**_top('test_requirements = ["t.txt"]\n'), "t.txt": "--requirement=req/base.txt\n"},
    ),
    "include glob out of the service folder": Row(
        ("build",),
        f"{M}: include: matches no file in s/a/ (../../req/*)",
        files=_svc('include = ["../../req/*"]\n'),
    ),
    "probe timeout inf": Row(
        ("build",),
        f"{M}: health.timeout",
        files=_svc("health = { tcp = true, timeout = inf }\n", WEB.split("health")[0]),
    ),
    "size budget nan": Row(
        ("build",), f"{M}: size_budget_mb", files=_svc("size_budget_mb = nan\n")
    ),
    "port as a float": Row(
        ("build",), f"{M}: port", files=_svc("port = 8000.0\nhealth = { tcp = true }\n")
    ),
    "env name starting with a digit": Row(
        ("build",), f"{M}: env.1A", files=_svc('env = { 1A = "x" }\n')
    ),
    "NUL in a command": Row(
        ("build",),
        f"{M}: command: argument 3 holds a NUL character",
        files={M: 'tier = "base"\ncommand = ["python", "-c", "\\u0000"]\n'},
    ),
    "tool.pipeline a string": Row(
        ("build",),
        "pyproject.toml: tool.pipeline",
        files={"pyproject.toml": '[tool]\npipeline = "x"\n'},
        make=_all(lambda tmp: (tmp / "repo" / C).unlink()),
    ),
    # cache import of a damaged or hostile export
    "import: a '..' member": Row(
        IMPORT,
        f"{X}/results.tar.gz: member '../evil.json': has '..' in its path",
        make=_export(results=[("file", "../evil.json", b"{}")]),
    ),
    "import: an absolute member": Row(
        IMPORT,
        f"{X}/results.tar.gz: member '/tmp/evil.json': has an absolute path",
        make=_export(results=[("file", "/tmp/evil.json", b"{}")]),
    ),
    "import: an absolute symlink": Row(
        IMPORT,
        f"{X}/uv.tar.gz: member './cache': is a link to an absolute path",
        make=_export(volume=[("sym", "./cache", "/etc")]),
    ),
    "import: a symlink leaving the folder": Row(
        IMPORT,
        f"{X}/uv.tar.gz: member './archive-v0/up': is a link leaving the folder",
        make=_export(volume=[*VOLUME, ("sym", "./archive-v0/up", "../../..")]),
    ),
    "import: a hardlink leaving the folder": Row(
        IMPORT,
        f"{X}/uv.tar.gz: member './h': is a link leaving the folder",
        make=_export(volume=[("hard", "./h", "../../etc/passwd")]),
    ),
    "import: an absolute hardlink": Row(
        IMPORT,
        f"{X}/uv.tar.gz: member './h': is a link to an absolute path",
        make=_export(volume=[("hard", "./h", "/etc/passwd")]),
    ),
    "import: a device file": Row(
        IMPORT,
        f"{X}/uv.tar.gz: member './null': is a device or special file",
        make=_export(volume=[("chr", "./null", "")]),
    ),
    "import: a fifo": Row(
        IMPORT,
        f"{X}/uv.tar.gz: member './pipe': is a device or special file",
        make=_export(volume=[("fifo", "./pipe", "")]),
    ),
    "import: a member under a link": Row(
        IMPORT,
        f"{X}/uv.tar.gz: member './d/x': lies under the link 'd'",
        make=_export(volume=[*VOLUME, ("sym", "./d", "archive-v0"), ("file", "./d/x", b"x")]),
    ),
    "import: a link in the result cache": Row(
        IMPORT,
        f"{X}/results.tar.gz: member './results/a.json': is a link",
        make=_export(results=[*RESULTS, ("sym", "./results/a.json", "k.json")]),
    ),
    "import: results.tar.gz not gzip": Row(
        IMPORT, f"{X}/results.tar.gz: is not a whole gzip tarball", make=_export(then=_not_gzip)
    ),
    "import: a tarball cut short": Row(
        IMPORT, f"{X}/uv.tar.gz: is not a whole gzip tarball", make=_export(then=_cut)
    ),
    "import: results.tar.gz missing": Row(
        IMPORT,
        f"{X}/results.tar.gz: is missing, but manifest.json lists results",
        make=_export(then=lambda f: (f / "results.tar.gz").unlink()),
    ),
    "import: a listed volume's tarball missing": Row(
        IMPORT,
        f"{X}/uv.tar.gz: is missing, but manifest.json lists uv",
        make=_export(then=lambda f: (f / "uv.tar.gz").unlink()),
    ),
    "import: a tarball a link out of the folder": Row(
        IMPORT,
        f"{X}/uv.tar.gz: is a link, not a file",
        make=_all(
            _put("elsewhere.tar.gz"),
            _export(
                then=_replace(
                    "uv.tar.gz", lambda p: p.symlink_to(p.parents[2] / "elsewhere.tar.gz")
                )
            ),
        ),
    ),
    "import: a tarball of another size": Row(
        IMPORT,
        f"{X}/uv.tar.gz: is ",
        make=_export(manifest=_size("uv", 1)),
    ),
    "import: manifest.json missing": Row(
        IMPORT,
        f"{X}/manifest.json: is missing",
        make=_export(then=lambda f: (f / "manifest.json").unlink()),
    ),
    "import: manifest.json a folder": Row(
        IMPORT,
        f"{X}/manifest.json: is not a file",
        make=_export(then=_replace("manifest.json", lambda p: p.mkdir())),
    ),
    "import: manifest.json not JSON": Row(
        IMPORT,
        f"{X}/manifest.json: is not JSON",
        make=_export(then=_replace("manifest.json", lambda p: p.write_text("{"))),
    ),
    "import: manifest.json a list": Row(
        IMPORT, f"{X}/manifest.json: is not a JSON object", make=_export(manifest=lambda m: [m])
    ),
    "import: manifest unknown field": Row(
        IMPORT,
        f"{X}/manifest.json: colour: unknown field",
        make=_export(manifest=_field("colour", 1)),
    ),
    "import: manifest scope a number": Row(
        IMPORT, f"{X}/manifest.json: scope: is 5", make=_export(manifest=_field("scope", 5))
    ),
    "import: manifest sizes a list": Row(
        IMPORT, f"{X}/manifest.json: sizes: is []", make=_export(manifest=_field("sizes", []))
    ),
    "import: manifest sizes naming an unknown volume": Row(
        IMPORT,
        f"{X}/manifest.json: sizes.docker: is not one of",
        make=_export(manifest=_size("docker", 5)),
    ),
    "import: manifest size a string": Row(
        IMPORT,
        f"{X}/manifest.json: sizes.uv: is '12', not a number",
        make=_export(manifest=_size("uv", "12")),
    ),
    "import: manifest size negative": Row(
        IMPORT, f"{X}/manifest.json: sizes.uv: is -1", make=_export(manifest=_size("uv", -1))
    ),
    "import: manifest size a bool": Row(
        IMPORT,
        f"{X}/manifest.json: sizes.results: is True",
        make=_export(manifest=_size("results", value=True)),
    ),
    "import: manifest left_out a string": Row(
        IMPORT,
        f"{X}/manifest.json: left_out: is 'pip'",
        make=_export(manifest=_field("left_out", "pip")),
    ),
    "import: manifest left_out an unknown volume": Row(
        IMPORT,
        f"{X}/manifest.json: left_out: 'docker' is not a volume",
        make=_export(manifest=_field("left_out", ["docker"])),
    ),
    "import: the scope's folder a link": Row(
        IMPORT,
        f"{X}: is not a folder (a link or a file)",
        make=_all(
            _export(),
            lambda tmp: (tmp / "carried/x").rename(tmp / "elsewhere"),
            _link("carried/x", "{tmp}/elsewhere"),
        ),
    ),
    "import: the scope's folder a file": Row(
        IMPORT, f"{X}: is not a folder (a link or a file)", make=_put("carried/x")
    ),
    "import: DIR a file": Row(
        IMPORT, "cache import: {tmp}/carried is not a folder", make=_put("carried")
    ),
    "import: --fallback-scope ..": Row(
        (*IMPORT, "--fallback-scope", ".."),
        "--fallback-scope: '..' cannot be a cache scope",
        make=_put("carried/"),
    ),
    "import: --fallback-scope a hidden folder": Row(
        (*IMPORT, "--fallback-scope", ".old"),
        "--fallback-scope: '.old' cannot be a cache scope",
        make=_put("carried/.old/"),
    ),
    "import: PIPELINE_CACHE_SCOPE=../../x": Row(
        ("cache", "import", "{tmp}/carried"),
        "PIPELINE_CACHE_SCOPE: '../../x' cannot be a cache scope",
        {"PIPELINE_CACHE_SCOPE": "../../x"},
        make=_put("carried/"),
    ),
    # cache export onto the wrong place
    "export: DIR an existing file": Row(
        (*EXPORT, "{tmp}/carried"),
        "cache export: {tmp}/carried is not a folder",
        make=_put("carried"),
    ),
    "export: DIR below a file": Row(
        (*EXPORT, "{tmp}/carried/more"),
        "cache export: cannot write in {tmp}/carried/more",
        make=_put("carried"),
    ),
    "export: DIR/<scope> a file": Row(
        (*EXPORT, "{tmp}/carried"),
        "cache export: {tmp}/carried/x is not a folder an export can replace",
        make=_put("carried/x"),
    ),
    "export: --max-size-mb -1": Row(
        (*EXPORT, "{tmp}/carried", "--max-size-mb", "-1"), "--max-size-mb: -1.0"
    ),
    "export: --max-size-mb nan": Row(
        (*EXPORT, "{tmp}/carried", "--max-size-mb", "nan"), "--max-size-mb: nan"
    ),
    "export: --cache-scope ../x": Row(
        ("cache", "export", "{tmp}/carried", "--cache-scope", "../x"),
        "--cache-scope: '../x' cannot be",
    ),
}


def _tree(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path under ``root`` but git's own, with what would show a write."""
    return {
        str(p.relative_to(root)): (p.is_symlink(), p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in root.rglob("*")
        if ".git" not in p.relative_to(root).parts
    }


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in UNSET}
    # the checkout's own package, whatever the folder the row runs in
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), clean.get("PYTHONPATH")]))
    try:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            check=False,
            env={**clean, **NO_ENGINE, **env},
            timeout=120,  # bounded, not hung: every row fails in seconds
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"pipeline {' '.join(args)} did not end within 120 s")


@pytest.mark.parametrize("case", list(RUNS))
def test_bad_run(tmp_path: Path, case: str):
    row = RUNS[case]
    repo = tmp_path / "repo"
    _write(repo, {C: CONFIG, M: MANIFEST, "req/base.txt": "six==1.16.0\n", "s/a/a/__init__.py": ""})
    _write(repo, row.files or {})
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "monorepo")
    if row.make:
        row.make(tmp_path)

    def fill(text: str) -> str:
        return text.format(tmp=tmp_path, repo=repo)

    args = [fill(a) for a in row.args]
    env = {k: fill(v) for k, v in (row.env or {}).items()}
    if args[0] != "verify" and "--project-dir" not in args and "PIPELINE_PROJECT_DIR" not in env:
        args += ["--project-dir", str(repo)]
    before = _tree(tmp_path)
    done = _run(args, env, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert fill(row.message) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    if row.never_shown:
        assert row.never_shown not in done.stdout + done.stderr
    assert _tree(tmp_path) == before  # no .pipeline/, report, out file or import: nothing
