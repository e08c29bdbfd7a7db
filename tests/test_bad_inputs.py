"""Every bad input is a clear error: exit 2, no traceback, the file and the field named with
the fix, and nothing written. One row per input, each against a small valid monorepo."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_pipeline

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
