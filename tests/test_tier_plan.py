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
from tests.conftest import copy_example, pipeline_in, tarball_facts, value_of

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


def test_a_planned_tier_lies_below_the_tiers_between_it_and_the_root(tmp_path: Path):
    """images.lowest: the ai tier's layer is laid right on the base tier's image, unless its
    install is not planned or a tier in between has Debian packages of its own."""
    repo = _tiers(copy_example(tmp_path / "repo", ("worker",)), BASE, BACKEND)
    project = session.load(repo)
    assert images.lowest(project, "ai")
    assert not images.lowest(project, "backend")  # right on its root tier's image already
    assert not images.lowest(project, "base")
    toml = repo / "pipeline.toml"
    text = toml.read_text()
    toml.write_text(text.replace('extends = "base"\n', 'extends = "base"\napt = ["tini"]\n'))
    assert not images.lowest(session.load(repo), "ai")  # backend's Debian packages
    toml.write_text(text.replace('extends = "backend"\n', 'extends = "backend"\napt = ["tini"]\n'))
    assert images.lowest(session.load(repo), "ai")  # its own are laid below its layer too
    (repo / "requirements/base.txt").write_text(f"{BASE}--index-url https://example.org/simple\n")
    assert not images.lowest(session.load(repo), "ai")  # not planned


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
    tiers = images.tier_images(project, settings, runner.secrets_from_env(settings))
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
        tiers = images.tier_images(project, settings, runner.secrets_from_env(settings))
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
async def test_a_tier_change_that_leaves_the_test_tools_plan_reuses_their_install(
    tmp_path: Path, base_image: str
):
    """The test requirements are the tier's planned layer: a change of the tier that adds
    none of their dependencies (tomli: not one of pytest's on Python 3.11) keeps their
    install, and a service without dependencies of its own runs its tests on it."""
    scope = f"tests-tools-reuse-{time.time_ns()}"
    seen = []
    for added in ("", "tomli==2.0.1\n"):  # the example's backend tier, then with tomli
        repo = copy_example(tmp_path / f"repo{len(seen)}", ("users",))
        backend = repo / "requirements/backend.txt"
        backend.write_text(backend.read_text() + added)
        project = session.load(repo)
        settings = build_settings(project, base_image, scope)
        tier = images.tier_images(project, settings, runner.secrets_from_env(settings))["backend"]
        assert tier.tools_install is not None
        assert tier.test_tools is not None
        stamp = ["stat", "-c", "%y", "/tmp/pipeline-snapshot.json"]
        seen.append((await tier.tools_install.with_exec(stamp).stdout()).strip())
        unit = images.unit_tests(tier, project.services["users"], project)
        assert unit is not None
        assert " passed" in await unit.stdout()
        versions = "import pytest, httpx; print(pytest.__version__, httpx.__version__)"
        env = tier.build.with_(layers.with_tree(tier.test_tools))
        ran = env.with_exec(["/opt/venv/bin/python", "-c", versions])
        assert (await ran.stdout()).split() == ["8.3.3", "0.27.2"]  # requirements/test.txt
    assert seen[0] == seen[1]  # installed once: the changed tier reused the first install


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
@pytest.mark.parametrize(
    ("service", "base", "backend", "ai", "named"),
    [
        # pydantic 2.9.2 in the base tier pulls in pydantic-core 2.23.4: only the resolver
        # sees it (base's venv is installed, backend's plan reads it)
        ("worker", "pydantic==2.9.2\n", "pydantic-core==2.20.1\n", "", "pydantic-core"),
        # ai's plan runs on base's venv and backend's plan, before backend's install
        ("inference", BASE, BACKEND, "idna==3.7\n", "idna"),
    ],
    ids=["below-installed", "below-planned"],
)
def test_a_tier_that_would_change_a_package_below_it_fails_naming_the_fix(
    tmp_path: Path, base_image: str, service: str, base: str, backend: str, ai: str, named: str
):
    repo = _tiers(copy_example(tmp_path / "repo", (service,)), base, backend)
    (repo / "requirements/ai.txt").write_text(ai)
    report = tmp_path / "report.json"
    done = pipeline_in(
        repo, base_image, "build", "--no-test", "--report", str(report), scope="tests-plan"
    )
    assert done.returncode == 1, done.stderr
    (result,) = json.loads(report.read_text())["services"]
    reason = result["reason"]
    assert reason.startswith("dependencies: "), reason
    fix = "neither a tier nor the test requirements can change a package of the tier below them"
    assert fix in reason
    assert named in reason
    assert "<plan.py>" in reason  # the program named, not its source
    assert "Traceback" not in done.stderr


AI = "packaging==24.1\nattrs==24.2.0\n"


# every entry of /opt with its type, mode, owner, size, time (for an image) and link, then
# every file's bytes
def _files(times: bool) -> str:
    time_ = "%T@ " if times else ""
    return (
        f"cd / && echo listing=$(find opt -printf '%p %M %U:%G %s {time_}%l\\n' | sort "
        "| sha256sum) && echo bytes=$(find opt -type f -exec sha256sum {} + | sort | sha256sum)"
    )


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
async def test_a_change_between_a_tier_and_its_root_keeps_the_tier_s_layer_below_it(
    tmp_path: Path, base_image: str
):
    """ai's layer lies right on base's image, backend's above it: a package added to backend
    leaves the ai image's bottom layers (base's and ai's own) as they were, only the layer
    above them is new. The files are exactly those of the installs laid in turn (ai's layer
    on backend's image; ai's builder likewise, where ai's packages keep the times of their
    install, since it is laid on the container that installed them), and ai-base holds
    backend's layer byte for byte."""
    scope = f"tests-plan-lowest-{time.time_ns()}"
    seen = []
    for backend in (BACKEND, f"{BACKEND}certifi==2024.8.30\n"):  # backend gains a package
        repo = _tiers(copy_example(tmp_path / f"repo{len(seen)}", ("worker",)), BASE, backend)
        (repo / "requirements/ai.txt").write_text(AI)
        project = session.load(repo)
        settings = build_settings(project, base_image, scope)
        tiers = images.tier_images(project, settings, runner.secrets_from_env(settings))
        facts = {}
        for name in ("base", "backend", "ai"):
            await tiers[name].image.export(str(tmp_path / f"{name}{len(seen)}.tar"))
            facts[name] = tarball_facts(tmp_path / f"{name}{len(seen)}.tar").layers
        base, ai = len(facts["base"]), facts["ai"]
        assert ai[:base] == facts["base"]
        assert len(ai) == base + 2
        assert ai[-1] == facts["backend"][-1]  # backend's layer, shared by content
        # the image, and the builder the unit tests and services' installs run in, both laid
        # in the low order: the same files as ai's layer laid on backend's
        ai_layer = layers.with_tree(layers.added_tree(tiers["ai"].install))
        for what in ("image", "build"):
            low, backend_one = (getattr(tiers[tier], what) for tier in ("ai", "backend"))
            files = _files(times=what == "image")
            laid = [
                await ctr.with_exec(["sh", "-c", files]).stdout()
                for ctr in (low, backend_one.with_(ai_layer))
            ]
            for key in ("listing", "bytes"):
                assert value_of(laid[0], key) == value_of(laid[1], key), (what, key)
        imports = "import six, idna, certifi, packaging, attrs; print('imported')"
        if seen:
            ran = await tiers["ai"].image.with_exec(["python", "-c", imports]).stdout()
            assert "imported" in ran
        seen.append(ai)
    assert seen[1][: base + 1] == seen[0][: base + 1]  # base's layers and ai's: as they were
    assert seen[1][-1] != seen[0][-1]  # backend's layer: the new one


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_tier_whose_package_writes_a_file_of_a_package_below_it_fails_naming_both(
    tmp_path: Path, base_image: str
):
    """PyJWT (backend) and jwt (ai) both install jwt/__init__.py: laid in another order, the
    image would keep the other's file. ai's service fails naming the files and the fix, and
    its image, built and measured beside the proof, is not delivered; backend's service is."""
    repo = _tiers(copy_example(tmp_path / "repo", ("worker", "inference")), BASE, "PyJWT==2.9.0\n")
    (repo / "requirements/ai.txt").write_text("jwt==1.3.1\n")
    report, out = tmp_path / "report.json", tmp_path / "out"
    argv = ["export", "--no-test", "--out", str(out), "--report", str(report)]
    done = pipeline_in(repo, base_image, *argv, scope="tests-plan")
    assert done.returncode == 1, done.stderr
    written = {p.name.partition(".")[0] for p in out.iterdir()}
    assert written == {"worker"}, sorted(out.iterdir())  # and none of inference's files
    results = {s["service"]: s for s in json.loads(report.read_text())["services"]}
    assert results["worker"]["status"] == "ok", results["worker"]
    reason = results["inference"]["reason"]
    assert reason.startswith("dependencies: "), reason
    assert "tier 'ai' installs files that the tiers it extends already hold" in reason
    assert "/opt/venv/lib/python3.11/site-packages/jwt/__init__.py" in reason
    assert "fix: keep only one of the packages" in reason
