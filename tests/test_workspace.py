"""Services that are members of a uv workspace: pins from the workspace's one lock, the
workspace libraries they use built into their images, and exact rebuilds (a library or a pin
rebuilds exactly the services that take it)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import pytest

from pipeline import session
from pipeline.core import inputs, workspace
from pipeline.core.errors import ConfigError
from pipeline.core.workspace import normalise
from pipeline.supply.kinds import SBOM
from tests.conftest import copy_workspace, pipeline_in, run_pipeline

if TYPE_CHECKING:
    from pathlib import Path


SBOM_SUFFIX = SBOM.suffix


def keys(repo: Path) -> dict[str, str]:
    """Each service's inputs key: what the result cache and the rebuild decision use."""
    project = session.load(repo)
    settings = session.build_settings(project, "python:3.11-slim-bookworm", "tests")
    tiers = inputs.tier_inputs(project, settings, "sha256:" + "0" * 64)
    return {
        name: inputs.service_inputs(project, svc, tiers[svc.tier]).key()
        for name, svc in project.services.items()
    }


def locked_version(lock: str, package: str) -> str:
    found = re.search(rf'name = "{package}"\nversion = "([^"]+)"', lock)
    assert found, package
    return found[1]


def test_each_app_takes_its_own_pins_and_libraries_from_the_one_lock(tmp_path: Path):
    repo = copy_workspace(tmp_path / "ws")
    project = session.load(repo)
    lock = (repo / "uv.lock").read_text()
    hello, api = project.services["hello"].workspace, project.services["api"].workspace
    assert hello is not None and api is not None
    assert hello.lock == api.lock == repo / "uv.lock"
    # hello uses shout-lib, which uses greeter-lib: both libraries, and both libraries' pins;
    # hello is a package itself (its console script): installed last
    assert [lib.name for lib in hello.libraries] == ["greeter-lib", "shout-lib", "hello"]
    assert [lib.path for lib in hello.libraries] == [
        repo / "libs/greeter",
        repo / "libs/shout",
        repo / "apps/hello",
    ]
    idna, six = locked_version(lock, "idna"), locked_version(lock, "six")
    assert hello.pins == (f"idna=={idna}", f"six=={six}")
    assert [lib.name for lib in api.libraries] == ["greeter-lib"]
    assert api.pins == (f"idna=={idna}",)


def test_plan_shows_the_lock_the_libraries_and_the_pin_count(tmp_path: Path):
    repo = copy_workspace(tmp_path / "ws")
    done = run_pipeline("plan", "--project-dir", str(repo))
    assert done.returncode == 0, done.stderr
    assert (
        "    uv workspace: uv.lock, 2 pins, libraries: greeter-lib, shout-lib; itself installed "
        "(its entry points)" in done.stdout
    )
    assert "    uv workspace: uv.lock, 1 pins, libraries: greeter-lib" in done.stdout


def test_a_library_edit_rebuilds_exactly_the_apps_that_use_it(tmp_path: Path):
    repo = copy_workspace(tmp_path / "ws")
    before = keys(repo)
    shout = repo / "libs" / "shout" / "src" / "shout" / "__init__.py"
    shout.write_text(shout.read_text() + "\nLOUDER = True\n")
    after_shout = keys(repo)
    assert after_shout["hello"] != before["hello"]
    assert after_shout["api"] == before["api"]  # api does not use shout-lib
    greeter = repo / "libs" / "greeter" / "src" / "greeter" / "__init__.py"
    greeter.write_text(greeter.read_text() + "\nPOLITE = True\n")
    after_greeter = keys(repo)
    # hello uses greeter-lib through shout-lib: both apps rebuild
    assert after_greeter["hello"] != after_shout["hello"]
    assert after_greeter["api"] != after_shout["api"]


def test_a_lock_change_rebuilds_exactly_the_apps_whose_pins_moved(tmp_path: Path):
    repo = copy_workspace(tmp_path / "ws")
    before = keys(repo)
    lock_path = repo / "uv.lock"
    lock = lock_path.read_text()
    six = locked_version(lock, "six")
    # six moves (only hello takes it); a lock that moves nothing else leaves api alone
    lock_path.write_text(
        lock.replace(f'name = "six"\nversion = "{six}"', 'name = "six"\nversion = "1.16.0"')
    )
    moved = keys(repo)
    assert moved["hello"] != before["hello"]
    assert moved["api"] == before["api"]
    assert "six==1.16.0" in session.load(repo).services["hello"].workspace.pins  # type: ignore[union-attr]
    # a lock change that moves no pin of either (a comment) rebuilds nothing
    lock_path.write_text("# relocked\n" + lock)
    assert keys(repo) == before


def test_markers_extras_and_sources_are_carried_from_the_lock(tmp_path: Path):
    (tmp_path / "app").mkdir()
    (tmp_path / "pyproject.toml").write_text('[tool.uv.workspace]\nmembers = ["app"]\n')
    (tmp_path / "app" / "pyproject.toml").write_text('[project]\nname = "App"\nversion = "1"\n')
    (tmp_path / "uv.lock").write_text(
        """version = 1
[manifest]
members = ["app"]

[[package]]
name = "app"
version = "1"
source = { virtual = "app" }
dependencies = [
    { name = "httpx", extra = ["socks"] },
    { name = "colorama", marker = "sys_platform == 'win32'" },
    { name = "tool" },
]

[[package]]
name = "httpx"
version = "0.28.1"
source = { registry = "https://pypi.org/simple" }
dependencies = [{ name = "anyio" }]

[package.optional-dependencies]
socks = [{ name = "socksio" }]
brotli = [{ name = "brotli" }]

[[package]]
name = "anyio"
version = "4.6.0"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "socksio"
version = "1.0.0"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "brotli"
version = "1.1.0"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "colorama"
version = "0.4.6"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "tool"
version = "2.0"
source = { git = "https://example.com/tool.git?rev=v2#0123456789abcdef" }
"""
    )
    used = workspace.use(tmp_path / "app" / "pyproject.toml", tmp_path)
    assert used is not None
    assert used.package == "app"
    assert used.pins == (
        "anyio==4.6.0",
        "colorama==0.4.6 ; (sys_platform == 'win32')",
        "httpx==0.28.1",
        "socksio==1.0.0",  # the extra asked for; brotli's extra was not
        "tool @ git+https://example.com/tool.git@0123456789abcdef",
    )


@pytest.mark.parametrize(
    ("change", "said", "fix"),
    [
        ("no lock", "uv.lock is missing beside", "run `uv lock`"),
        ("stale lock", "has no workspace member 'hello'", "run `uv lock`"),
    ],
)
def test_a_workspace_the_lock_does_not_match_is_a_config_error(
    tmp_path: Path, change: str, said: str, fix: str
):
    repo = copy_workspace(tmp_path / "ws")
    lock = repo / "uv.lock"
    if change == "no lock":
        lock.unlink()
    else:
        lock.write_text(lock.read_text().replace('    "hello",\n', ""))
    with pytest.raises(ConfigError) as info:
        session.load(repo)
    assert said in str(info.value) and fix in str(info.value)
    done = run_pipeline("plan", "--project-dir", str(repo))
    assert done.returncode == 2
    assert said in done.stderr and "Traceback" not in done.stderr


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_the_workspace_example_builds_and_a_library_edit_rebuilds_one_app(
    tmp_path: Path, base_image: str
):
    """Both apps built with every check (hello: unit and smoke, with both libraries; api: smoke
    and its HTTP health probe). Then an edit to the library only hello uses: api replays from
    the result cache, hello is built again and its smoke sees the edit."""
    repo = copy_workspace(tmp_path / "ws")
    scope = "tests-workspace"
    out = tmp_path / "out"
    first = pipeline_in(repo, base_image, "export", "--no-cache", "--out", str(out), scope=scope)
    assert first.returncode == 0, first.stdout + first.stderr
    # the SBOM names the workspace packages in the image as the commit's own, with versions
    bom = json.loads((out / f"hello{SBOM_SUFFIX}").read_text())
    members = {
        c["name"]: c["version"]
        for c in bom["components"]
        if any(p["name"] == "pipeline:workspace-member" for p in c.get("properties", []))
    }
    assert {normalise(n): v for n, v in members.items()} == {
        "greeter-lib": "1.2.0",
        "shout-lib": "0.3.0",
        "hello": "0.1.0",
    }
    assert re.search(r"^api +base +ok ", first.stdout, re.MULTILINE), first.stdout
    assert re.search(r"^hello +base +ok ", first.stdout, re.MULTILINE), first.stdout
    shout = repo / "libs" / "shout" / "src" / "shout" / "__init__.py"
    shout.write_text(
        shout.read_text() + '\n\ndef whisper(name: str) -> str:\n    return greet(name) + "..."\n'
    )
    manifest = repo / "apps" / "hello" / "service.toml"
    edited = "from shout import whisper; assert whisper('x') == 'hello, x...'"
    smoke = manifest.read_text().replace(
        'smoke = ["hello", "smoke"]', f'smoke = ["python", "-c", "{edited}"]'
    )
    assert smoke != manifest.read_text()
    manifest.write_text(smoke)
    again = pipeline_in(repo, base_image, "build", scope=scope)
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r"^api +base +cached ", again.stdout, re.MULTILINE), again.stdout
    assert re.search(r"^hello +base +ok ", again.stdout, re.MULTILINE), again.stdout


def older_idna(lock: str, idna: str) -> str:
    """The lock with idna pinned at 3.10 (the pipeline reads a registry pin's version, not
    its hashes)."""
    assert idna != "3.10"
    return lock.replace(f'name = "idna"\nversion = "{idna}"', 'name = "idna"\nversion = "3.10"')


def _tier_with_pyproject(repo: Path, member: str) -> None:
    config = repo / "pipeline.toml"
    config.write_text(
        config.read_text().replace(
            'group = "base"', f'group = "base"\nrequirements = ["libs/{member}/pyproject.toml"]'
        )
    )


def test_a_tier_takes_a_members_pyproject_as_the_lock_pins_it(tmp_path: Path):
    """A workspace library's pyproject among a tier's requirements: its dependencies as the
    lock resolved them (not greeter's range, idna>=3.7, which would take the index's newest),
    the libraries it depends on built into the tier, and a move of a pin in the lock moves the
    tier's key."""
    repo = copy_workspace(tmp_path / "ws")
    _tier_with_pyproject(repo, "shout")
    lock_path = repo / "uv.lock"
    lock = lock_path.read_text()
    idna, certifi = (locked_version(lock, n) for n in ("idna", "certifi"))
    tier = session.load(repo).tiers["base"]
    assert tier.requirements == ()
    assert tier.members == (repo / "libs" / "shout" / "pyproject.toml",)
    assert tier.pins == (f"certifi=={certifi}", f"idna=={idna}")
    assert [lib.name for lib in tier.libraries] == ["greeter-lib"]  # not shout-lib itself
    done = run_pipeline("plan", "--project-dir", str(repo))
    assert (
        "base (image base): uv.lock group base, libs/shout/pyproject.toml "
        "(2 pins, libraries greeter-lib)"
    ) in done.stdout
    before = keys(repo)
    lock_path.write_text(older_idna(lock, idna))
    assert session.load(repo).tiers["base"].pins == (f"certifi=={certifi}", "idna==3.10")
    moved = keys(repo)
    assert moved["api"] != before["api"] and moved["hello"] != before["hello"]


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_tier_may_take_a_pyproject_as_its_requirements(tmp_path: Path, base_image: str):
    """A tier listing a library's pyproject.toml installs that project's dependencies (idna,
    greeter-lib's) as the lock pins them, so the tier image holds them before any app does.
    The lock pins an older idna than the index's newest, which greeter's range (idna>=3.7)
    also admits: resolved at build time instead, the tier would take the newest, and api's
    pins (the lock's) would contradict it."""
    repo = copy_workspace(tmp_path / "ws")
    _tier_with_pyproject(repo, "greeter")
    lock = repo / "uv.lock"
    idna = locked_version(lock.read_text(), "idna")
    lock.write_text(older_idna(lock.read_text(), idna))
    page = tmp_path / "report.json"
    done = pipeline_in(
        repo, base_image, "build", "api", "--no-test", "--report", str(page), scope="tests-ws-tier"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [api] = json.loads(page.read_text())["services"]
    # the tier now holds idna, so the app adds only greeter-lib (and its source) on top
    own = api["image"]["size"] - api["tier_image"]["size"]
    assert own < 60_000, own


def test_plan_takes_the_scope_options_a_build_takes(tmp_path: Path):
    repo = copy_workspace(tmp_path / "ws")
    where = ["--project-dir", str(repo), "--base-image", "python:3.11-slim-bookworm"]
    done = run_pipeline("plan", *where, "--cache-scope", "feature-x", "--changed-since", "HEAD")
    assert done.returncode == 0, done.stderr
    bad = run_pipeline("plan", *where, "--cache-scope", "../x")
    assert bad.returncode == 2
    assert "--cache-scope: '../x' cannot be a cache scope" in bad.stderr


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_the_smoke_check_finds_the_commands_program_first(tmp_path: Path, base_image: str):
    """hello's command changed to a program nothing installs: its smoke check fails saying
    so (hello has no port, so no health probe races it), not with an empty output. (Its own
    console script `hello` is found: the example's build runs it as its smoke.)"""
    repo = copy_workspace(tmp_path / "ws")
    manifest = repo / "apps" / "hello" / "service.toml"
    manifest.write_text(
        manifest.read_text().replace('command = ["hello"]', 'command = ["hello-cli"]')
    )
    report = tmp_path / "report.json"
    done = pipeline_in(
        repo, base_image, "build", "hello", "--no-cache", "--report", str(report),
        scope="tests-ws-smoke",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    [hello] = json.loads(report.read_text())["services"]
    assert hello["status"] == "failed"
    assert hello["reason"].startswith("smoke: the command's program hello-cli is not on PATH")
    assert "fix: install the package that provides it, or correct command" in hello["reason"]


def test_the_sbom_names_workspace_packages_as_the_commits_own():
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from pipeline.core.stamp import Stamp
    from pipeline.supply import sbom

    source = "https://github.com/acme/mono"
    stamp = Stamp("hello", "base", "c" * 40, "main", "2026-01-02T03:04:05Z", source, dirty=False)
    dist = {"expression": "", "license": "", "classifiers": [], "record_sha256": ""}
    installed = {
        "python": [
            {**dist, "name": "greeter_lib", "version": "1.2.0"},
            {**dist, "name": "idna", "version": "3.20"},
        ],
        "debian": [],
    }
    text = sbom.document(stamp, "sha256:" + "b" * 64, installed, {"greeter-lib": "libs/greeter"})
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    found = {c["name"]: c for c in json.loads(text)["components"]}
    greeter = found["greeter_lib"]
    assert greeter["version"] == "1.2.0"
    assert greeter["purl"] == (
        "pkg:generic/greeter-lib@1.2.0?vcs_url=git%2Bhttps://github.com/acme/mono%40" + "c" * 40
    )
    props = {p["name"]: p["value"] for p in greeter["properties"]}
    assert props["pipeline:workspace-member"] == "libs/greeter"
    assert props["pipeline:revision"] == "c" * 40
    assert found["idna"]["purl"] == "pkg:pypi/idna@3.20"  # from the index, as before


def test_requires_python_is_checked_against_the_base_images_python(tmp_path: Path):
    repo = copy_workspace(tmp_path / "ws")
    greeter = repo / "libs" / "greeter" / "pyproject.toml"
    greeter.write_text(
        greeter.read_text().replace('requires-python = ">=3.11"', 'requires-python = ">=3.12"')
    )
    used = session.load(repo).services["api"].workspace
    files = workspace.python_files(repo / "apps" / "api" / "pyproject.toml", used)
    assert files == [repo / "apps/api/pyproject.toml", greeter]
    workspace.check_python(files[:1], "3.11.2", "python:3.11-slim")  # api's own allows 3.11
    with pytest.raises(ConfigError) as info:
        workspace.check_python(files, "3.11.2", "python:3.11-slim")
    said = str(info.value)
    assert said.startswith(f"{greeter}: project.requires-python: is '>=3.12', but the base image")
    assert "python:3.11-slim has Python 3.11.2" in said
    assert "fix: build from a base image whose Python it allows (--base-image)" in said
    workspace.check_python(files, "3.12.1", "python:3.12-slim")


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_run_refuses_a_requires_python_the_base_image_cannot_meet(
    tmp_path: Path, base_image: str
):
    repo = copy_workspace(tmp_path / "ws")
    hello = repo / "apps" / "hello" / "pyproject.toml"
    hello.write_text(
        hello.read_text().replace('requires-python = ">=3.11"', 'requires-python = ">=3.99"')
    )
    out = tmp_path / "out"
    done = pipeline_in(repo, base_image, "export", "--out", str(out), scope="tests-ws-python")
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{hello}: project.requires-python: is '>=3.99', but the base image" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists() or not any(out.iterdir())  # refused before anything was written


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_member_whose_workspace_is_out_of_reach_fails_naming_the_fix(
    tmp_path: Path, base_image: str
):
    """The pipeline's config in apps/: the workspace root above it is not the project's, so
    api's `{ workspace = true }` source cannot be met; the failure says where the root goes."""
    repo = copy_workspace(tmp_path / "ws")
    (repo / "apps" / "base.txt").write_text("certifi==2024.8.30\n")
    (repo / "apps" / "pipeline.toml").write_text(
        'services = ["api"]\nbase_image = "python:3.11-slim-bookworm"\n'
        '[tiers.base]\nrequirements = ["base.txt"]\n'
    )
    report = tmp_path / "report.json"
    done = pipeline_in(
        repo / "apps",
        base_image,
        "build",
        "--no-test",
        "--report",
        str(report),
        scope="tests-ws-out",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    [api] = json.loads(report.read_text())["services"]
    assert api["reason"].startswith("dependencies: ")
    assert (
        "fix: keep the uv workspace's root (its pyproject with [tool.uv.workspace]" in api["reason"]
    )


def test_a_tier_from_a_dependency_group_is_pinned_by_the_lock(tmp_path: Path):
    repo = copy_workspace(tmp_path / "ws")
    lock_path = repo / "uv.lock"
    lock = lock_path.read_text()
    certifi = locked_version(lock, "certifi")
    tier = session.load(repo).tiers["base"]
    assert tier.lock == lock_path
    assert tier.pins == (f"certifi=={certifi}",)
    before = keys(repo)
    # the group's pin moves: every app rebuilds (they all start from the tier)
    lock_path.write_text(lock.replace(f'version = "{certifi}"', 'version = "2024.8.30"', 1))
    moved = keys(repo)
    assert moved["api"] != before["api"] and moved["hello"] != before["hello"]
    assert session.load(repo).tiers["base"].pins == ("certifi==2024.8.30",)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("unknown group", "names the dependency group 'nope', which uv.lock does not hold"),
        ("no workspace", "names the dependency group 'base', but"),
    ],
)
def test_a_tier_group_that_cannot_be_read_is_a_config_error(tmp_path: Path, change: str, said: str):
    repo = copy_workspace(tmp_path / "ws")
    if change == "unknown group":
        config = repo / "pipeline.toml"
        config.write_text(config.read_text().replace('group = "base"', 'group = "nope"'))
    else:
        root = repo / "pyproject.toml"
        root.write_text(root.read_text().replace("[tool.uv.workspace]", "[tool.not-uv]"))
    done = run_pipeline("plan", "--project-dir", str(repo))
    assert done.returncode == 2, done.stdout
    assert f"{repo / 'pipeline.toml'}: tiers.base.group: {said}" in done.stderr
    assert "fix:" in done.stderr and "Traceback" not in done.stderr


def _tier_with_greeter(repo: Path) -> None:
    config = repo / "pipeline.toml"
    config.write_text(
        config.read_text().replace('group = "base"', 'group = "base"\nlibraries = ["greeter-lib"]')
    )


def test_a_library_many_apps_use_may_go_into_their_tier(tmp_path: Path):
    """greeter-lib in the base tier: built once into the tier's layer, with its pins; the apps
    install only what the tier lacks, and a greeter edit reaches both through the tier."""
    repo = copy_workspace(tmp_path / "ws")
    _tier_with_greeter(repo)
    project = session.load(repo)
    tier = project.tiers["base"]
    assert [lib.name for lib in tier.libraries] == ["greeter-lib"]
    idna, certifi = (locked_version((repo / "uv.lock").read_text(), n) for n in ("idna", "certifi"))
    assert tier.pins == (f"certifi=={certifi}", f"idna=={idna}")
    hello, api = project.services["hello"].workspace, project.services["api"].workspace
    assert hello is not None and api is not None
    assert [lib.name for lib in hello.libraries] == ["shout-lib", "hello"]
    assert api.libraries == ()
    done = run_pipeline("plan", "--project-dir", str(repo))
    assert "base (image base): uv.lock group base (2 pins, libraries greeter-lib)" in done.stdout
    before = keys(repo)
    greeter = repo / "libs" / "greeter" / "src" / "greeter" / "__init__.py"
    greeter.write_text(greeter.read_text() + "\nPOLITE = True\n")
    after = keys(repo)
    assert after["api"] != before["api"] and after["hello"] != before["hello"]
    shout = repo / "libs" / "shout" / "src" / "shout" / "__init__.py"
    shout.write_text(shout.read_text() + "\nLOUD = True\n")
    last = keys(repo)
    assert last["hello"] != after["hello"] and last["api"] == after["api"]
    config = repo / "pipeline.toml"
    config.write_text(config.read_text().replace('["greeter-lib"]', '["nope-lib"]'))
    bad = run_pipeline("plan", "--project-dir", str(repo))
    assert bad.returncode == 2
    assert "tiers.base.libraries: names 'nope-lib', which is no member" in bad.stderr


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_tier_library_is_built_into_the_tier_and_not_into_the_apps(
    tmp_path: Path, base_image: str
):
    repo = copy_workspace(tmp_path / "ws")
    _tier_with_greeter(repo)
    report = tmp_path / "report.json"
    done = pipeline_in(
        repo, base_image, "build", "--no-cache", "--report", str(report), scope="tests-ws-tierlib"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = {r["service"]: r for r in json.loads(report.read_text())["services"]}
    assert all(r["status"] == "ok" for r in results.values())
    # api's own layers hold its two source files and build-info: greeter and idna are the tier's
    assert results["api"]["own_size"] < 20_000, results["api"]["own_size"]
    assert results["api"]["tests"]["smoke"] is True  # greeter imports from the tier's venv
    assert results["hello"]["tests"] == {"unit": True, "smoke": True}
