"""A child tier's install, planned (images.planned_install, programs/plan.py): the pins of what
it adds are resolved on its parent's venv, then installed apart from that venv, so a change
below that leaves them equal reuses the install. Against the real engine: the same layer as an
install on top of the parent, the install reused, a conflict with the parent named."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pytest
from dagger import dag

from pipeline import session
from pipeline.engine import images, layers, runner
from pipeline.engine.programs import plan
from pipeline.session import build_settings
from tests.conftest import copy_example, pipeline_in, value_of

if TYPE_CHECKING:
    from pathlib import Path

# small wheels: one with a console script and a compiled module (charset-normalizer), pure ones
BASE = "six==1.16.0\n"
BACKEND = "idna==3.10\ncharset-normalizer==3.4.0\n"


def _tiers(repo: Path, base: str, backend: str) -> Path:
    (repo / "requirements/base.txt").write_text(base)
    (repo / "requirements/backend.txt").write_text(backend)
    return repo


def test_pins_are_compared_by_normalised_name():
    frozen = plan.pins("PyYAML==6.0.2\nsix==1.16.0\n# a comment\n")
    assert frozen == {"pyyaml": "==6.0.2", "six": "==1.16.0"}
    assert plan.key("Charset_Normalizer == 3.4.0") == ("charset-normalizer", "== 3.4.0")


def test_only_chains_of_plain_requirement_files_are_planned(tmp_path: Path):
    repo = _tiers(copy_example(tmp_path / "repo", ("worker",)), BASE, BACKEND)
    project = session.load(repo)
    assert images.plannable(project, "backend")
    assert images.plannable(project, "ai")
    (repo / "pipeline.toml").write_text(
        (repo / "pipeline.toml").read_text().replace('requirements = ["requirements/ai.txt"]\n', "")
    )
    assert not images.plannable(session.load(repo), "ai")  # no requirements: nothing to plan
    for line in (
        "--index-url https://example.org/simple",
        "idna @ https://example.org/i.whl",
        "idna==3.10 --hash=sha256:946d195a0d259cbba61165e88e65941f16e9b36ea6ddb97f00452bae8b1287d3",
        "./libs/greeter",
    ):
        (repo / "requirements/base.txt").write_text(f"{BASE}{line}\n")
        project = session.load(repo)
        assert not images.plannable(project, "backend"), line  # the chain below counts too
        assert not images.plannable(project, "ai"), line


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
async def test_a_planned_install_lays_what_an_install_on_top_of_the_parent_lays(
    tmp_path: Path, base_image: str
):
    """The same files, modes, owners, sizes and times as the child's install on top of its
    parent's venv: uv's lock file and the venv's own bytecode are the parent's, not the
    child's."""
    project = session.load(_tiers(copy_example(tmp_path / "repo", ("worker",)), BASE, BACKEND))
    settings = build_settings(project, base_image, f"tests-plan-same-{time.time_ns()}")
    tiers = images.tier_images(project, settings, await runner.prepare(settings))
    backend = tiers["backend"]
    on_top, _ = images.tier_venv(
        tiers["base"].build, backend.tier, first=False, compile_bytecode=True, project=project
    )
    listing = "find . -printf '%p %M %U:%G %s %T@ %l\\n' | sort | sha256sum"
    script = (
        f"echo planned=$(cd /a && {listing}); echo on_top=$(cd /b && {listing}); "
        "echo files=$(find /a -type f | wc -l); ls /a/opt/venv/bin; diff -r /a /b"
    )
    out = await (
        dag.container()
        .from_(base_image)
        .with_mounted_directory("/a", layers.added_tree(backend.install))
        .with_mounted_directory("/b", layers.added_tree(on_top))
        .with_exec(["sh", "-c", script])
        .stdout()
    )
    assert value_of(out, "planned") == value_of(out, "on_top")
    assert int(value_of(out, "files")) > 50
    assert "normalizer" in out.split()  # the package's console script


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
async def test_a_change_below_a_tier_reuses_its_install_while_what_it_adds_is_the_same(
    tmp_path: Path, base_image: str
):
    scope = f"tests-plan-reuse-{time.time_ns()}"
    seen = []
    for base in (BASE, f"{BASE}packaging==24.1\n"):  # the parent tier gains a package
        repo = _tiers(copy_example(tmp_path / f"repo{len(seen)}", ("worker",)), base, BACKEND)
        project = session.load(repo)
        settings = build_settings(project, base_image, scope)
        tiers = images.tier_images(project, settings, await runner.prepare(settings))
        # when the install's exec ran: its files are at the fixed time, its snapshot is not
        stamp = ["stat", "-c", "%y", "/tmp/pipeline-snapshot.json"]
        installed = await tiers["backend"].install.with_exec(stamp).stdout()
        imports = "import six, idna, charset_normalizer; print('imported')"
        ran = await tiers["backend"].image.with_exec(["python", "-c", imports]).stdout()
        assert "imported" in ran
        seen.append(installed.strip())
    assert seen[0] == seen[1]  # installed once: the second parent reused the first's install
    packaging = "import packaging; print('found')"
    ran = await tiers["backend"].build.with_exec(["/opt/venv/bin/python", "-c", packaging])
    assert "found" in await ran.stdout()  # the builder holds the new parent's packages too


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_tier_that_would_change_a_package_below_it_fails_naming_the_fix(
    tmp_path: Path, base_image: str
):
    # pydantic 2.9.2 in the base tier pulls in pydantic-core 2.23.4: only the resolver sees it
    repo = _tiers(
        copy_example(tmp_path / "repo", ("worker",)),
        "pydantic==2.9.2\n",
        "pydantic-core==2.20.1\n",
    )
    report = tmp_path / "report.json"
    done = pipeline_in(
        repo, base_image, "build", "--no-test", "--report", str(report), scope="tests-plan"
    )
    assert done.returncode == 1, done.stderr
    (worker,) = json.loads(report.read_text())["services"]
    reason = worker["reason"]
    assert reason.startswith("dependencies: "), reason
    assert "a tier cannot change a package of the tier below it" in reason
    assert "pydantic-core" in reason
    assert "<plan.py>" in reason  # the program named, not its source
    assert "Traceback" not in done.stderr
