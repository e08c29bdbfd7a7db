"""The command line without an engine: plan, usage and config errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_example
from tests.conftest import run_pipeline as cli


def test_plan_lists_tiers_services_and_uploads():
    done = cli("plan", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert [t["image"] for t in plan["tiers"]] == ["base", "backend-base", "ai-base"]
    uploads = {s["name"]: s["uploads"] for s in plan["services"]}
    assert "users/app.py" in uploads["users"]
    # tests, manifests and bytecode never reach an image
    assert not any(
        u.startswith("tests/") or u.endswith((".pyc", "service.toml")) for u in uploads["users"]
    )
    assert "inference/model.json" in uploads["inference"]


def test_plan_selects_by_tier():
    done = cli("plan", "--tier", "ai")
    assert done.returncode == 0
    assert "inference [ai, port 8000]" in done.stdout
    assert "users [" not in done.stdout


def test_unknown_service_is_a_usage_error():
    done = cli("build", "nope")
    assert done.returncode == 2
    assert "unknown service 'nope'" in done.stderr
    assert "Traceback" not in done.stderr


def test_config_error_names_file_field_fix_and_exits_2(tmp_path: Path):
    (tmp_path / "pipeline.toml").write_text('services = ["s/*"]\n[tiers.base]\n')
    (tmp_path / "s" / "a").mkdir(parents=True)
    (tmp_path / "s" / "a" / "service.toml").write_text('tier = "base"\ncommand = 5\n')
    done = cli("build", "--project-dir", str(tmp_path), "--report", str(tmp_path / "r.json"))
    assert done.returncode == 2
    assert "s/a/service.toml: command:" in done.stderr
    assert "fix:" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "r.json").exists()  # nothing half-written


def test_export_requires_out():
    done = cli("export")
    assert done.returncode == 2
    assert "--out" in done.stderr


def test_help_reads_well():
    done = cli("--help")
    assert done.returncode == 0
    for word in ("plan", "build", "export"):
        assert word in done.stdout
    build_help = cli("build", "--help").stdout
    for flag in ("--tier", "--jobs", "--cache-scope", "--base-image", "--project-dir"):
        assert flag in build_help


def test_changed_since_with_nothing_changed_does_nothing(tmp_path: Path):
    from tests.conftest import copy_example

    repo = copy_example(tmp_path / "repo", services=("users", "worker"))
    done = cli("build", "--changed-since", "HEAD", "--project-dir", str(repo))
    assert done.returncode == 0, done.stderr
    assert "nothing to do" in done.stdout
    (repo / "services/users/users/app.py").write_text("# edited\n")
    plan = json.loads(
        cli("plan", "--json", "--changed-since", "HEAD", "--project-dir", str(repo)).stdout
    )
    assert [s["name"] for s in plan["services"]] == ["users"]


def test_bad_environment_value_is_a_usage_error():
    done = cli("build", env={"PIPELINE_JOBS": "many"})
    assert done.returncode == 2
    assert "PIPELINE_JOBS: 'many' is not a number" in done.stderr  # named where it came from
    assert "Traceback" not in done.stderr


def _monorepo(root: Path, manifest: str = 'tier = "base"\ncommand = ["python", "-m", "a"]\n',
              config: str = 'services = ["s/*"]\n[tiers.base]\n') -> Path:  # fmt: skip
    root.mkdir(parents=True)
    (root / "pipeline.toml").write_text(config)
    (root / "s" / "a" / "a").mkdir(parents=True)
    (root / "s" / "a" / "a" / "__init__.py").write_text("")
    (root / "s" / "a" / "service.toml").write_text(manifest)
    return root


def test_a_folder_name_that_is_no_image_name_needs_a_name(tmp_path: Path):
    repo = _monorepo(tmp_path / "repo")
    (repo / "s" / "a").rename(repo / "s" / "My users")
    done = cli("plan", "--project-dir", str(repo))
    assert done.returncode == 2
    assert "is not a valid image name" in done.stderr
    (repo / "s" / "My users" / "service.toml").write_text(
        'name = "users"\ntier = "base"\ncommand = "python -m a --addr ${ADDR}"\n'
    )
    assert cli("plan", "--project-dir", str(repo)).returncode == 0


def test_non_utf8_and_a_second_config_are_errors(tmp_path: Path):
    repo = _monorepo(tmp_path / "repo")
    (repo / "s" / "a" / "service.toml").write_bytes(b'tier = "base"\ncommand = ["\xff"]\n')
    done = cli("plan", "--project-dir", str(repo))
    assert done.returncode == 2
    assert "is not UTF-8 text" in done.stderr
    repo = _monorepo(tmp_path / "two")
    (repo / "pyproject.toml").write_text("[tool.pipeline]\nservices = []\n")
    done = cli("plan", "--project-dir", str(repo))
    assert done.returncode == 2
    assert "pyproject.toml: tool.pipeline: is a second configuration" in done.stderr


def test_the_config_is_found_from_a_subfolder(tmp_path: Path):
    repo = _monorepo(tmp_path / "repo")
    done = cli("plan", "--json", cwd=repo / "s" / "a" / "a")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["project"] == str(repo.resolve())
    done = cli("plan", cwd=tmp_path)
    assert done.returncode == 2
    assert "no pipeline.toml or [tool.pipeline]" in done.stderr


def test_a_bad_base_image_reference_is_a_usage_error(tmp_path: Path):
    repo = _monorepo(tmp_path / "repo")
    done = cli("build", "--project-dir", str(repo), "--base-image", "Not An Image!")
    assert done.returncode == 2
    assert "is not an image reference" in done.stderr
    assert "Traceback" not in done.stderr


RUN_ERRORS = {
    "publish outside git": (
        ["publish", "--registry", "localhost:1/x"],
        {},
        (
            "is not a git checkout, so no commit names the images; fix: publish from a git "
            "checkout, or pass --version"
        ),
    ),
    "password without a username": (
        ["publish", "--registry", "localhost:1/x", "--version", "1.0"],
        {"PIPELINE_REGISTRY_PASSWORD": "pw"},
        (
            "PIPELINE_REGISTRY_PASSWORD is set but --registry-username (or "
            "PIPELINE_REGISTRY_USERNAME) is not"
        ),
    ),
    "a username without a password": (
        ["publish", "--registry", "localhost:1/x", "--version", "1.0", "--registry-username", "u"],
        {},
        "a registry username is set but PIPELINE_REGISTRY_PASSWORD is not",
    ),
    "--out below a file": (
        ["export", "--out", "{root}/pipeline.toml/out"],
        {},
        "--out: cannot write in {root}/pipeline.toml/out (Not a directory); fix:",
    ),
    "--report naming a folder": (
        ["build", "--report", "{root}/s"],
        {},
        "--report: {root}/s is a folder",
    ),
    "--report below a file": (
        ["build", "--report", "{root}/pipeline.toml/r.json"],
        {},
        "--report: cannot write in {root}/pipeline.toml",
    ),
    "a version no tag can hold": (["build", "--version", "-1"], {}, "cannot be an image tag"),
}


@pytest.mark.parametrize("case", list(RUN_ERRORS))
def test_what_would_fail_a_run_late_fails_it_first(tmp_path: Path, case: str):
    """Found before any engine work: exit 2, the option named, the fix, nothing written."""
    args, env, message = RUN_ERRORS[case]
    repo = _monorepo(tmp_path / "repo")
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    argv = [a.format(root=repo) for a in args]
    done = cli(*argv, "--project-dir", str(repo), env={"PIPELINE_REGISTRY_PASSWORD": "", **env})
    assert done.returncode == 2, done.stdout + done.stderr
    assert message.format(root=repo) in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before


def _plan(repo: Path, *args: str) -> dict:
    done = cli("plan", "--json", "--project-dir", str(repo), *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_replayed_plan_follows_every_change_and_never_hides_an_error(tmp_path: Path):
    repo = _monorepo(tmp_path / "repo")
    first = _plan(repo)
    assert (repo / ".pipeline" / "plan.json").is_file()
    # A replay loads no config model and says what the loader says.
    probe = (
        "import sys; from pipeline.cli import main; main(['plan', '--json', '--project-dir', "
        f"{str(repo)!r}]); print(sorted(m for m in sys.modules if m.startswith('pydantic')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    replayed, modules = done.stdout.rsplit("\n", 2)[:2]
    assert json.loads(replayed) == first
    assert modules == "[]"

    manifest = repo / "s" / "a" / "service.toml"
    manifest.write_text(manifest.read_text() + 'port = 8000\nhealth = "none"\n')
    (repo / "s" / "a" / "a" / "app.py").write_text("")
    (repo / "s" / "b" / "b").mkdir(parents=True)
    (repo / "s" / "b" / "b" / "__init__.py").write_text("")
    (repo / "s" / "b" / "service.toml").write_text('tier = "base"\ncommand = "true"\n')
    services = {s["name"]: s for s in _plan(repo)["services"]}
    assert services["a"]["port"] == 8000
    assert "a/app.py" in services["a"]["uploads"]
    assert list(services) == ["a", "b"]
    assert [s["name"] for s in _plan(repo, "b")["services"]] == ["b"]

    done = cli("plan", "--project-dir", str(repo), "nosuch")
    assert done.returncode == 2
    assert "unknown service 'nosuch'" in done.stderr
    manifest.write_text(manifest.read_text() + "port = 8001\n")  # a duplicate key
    done = cli("plan", "--project-dir", str(repo))
    assert done.returncode == 2
    assert "service.toml" in done.stderr
    assert "not valid TOML" in done.stderr


def test_a_damaged_plan_entry_is_planned_again(tmp_path: Path):
    repo = _monorepo(tmp_path / "repo")
    first = _plan(repo)
    (repo / ".pipeline" / "plan.json").write_text("{not json")
    assert _plan(repo) == first
    assert json.loads((repo / ".pipeline" / "plan.json").read_text())["value"]["plan"]


def test_plan_says_what_git_ignores_is_left_out_fresh_and_replayed(tmp_path: Path):
    repo = copy_example(tmp_path / "repo", services=("users",))
    (repo / ".gitignore").write_text(".env\n")
    (repo / "services/users/users/.env").write_text("TOKEN=secret\n")
    for _ in range(2):  # loaded, then replayed
        (users,) = _plan(repo)["services"]
        assert "users/.env" not in users["uploads"]
        assert users["ignored"] == ["users/.env"]
    done = cli("plan", "--project-dir", str(repo))
    assert "left out, as git ignores them: users/.env" in done.stdout


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["publish", "--registry", "Not A Ref"], {}, "--registry: 'Not A Ref'"),
        (["publish"], {"PIPELINE_REGISTRY": "ghcr.io/Acme Corp"}, "PIPELINE_REGISTRY"),
        (["build", "--cache-scope", ".."], {}, "--cache-scope"),
        (["build"], {"PIPELINE_CACHE_SCOPE": "../../x"}, "PIPELINE_CACHE_SCOPE"),
    ],
)
def test_bad_run_options_fail_before_any_build(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
):
    repo = copy_example(tmp_path / "repo", services=("worker",))
    done = cli(*args, "--project-dir", str(repo), env={"PIPELINE_REGISTRY": "", **env})
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    assert "Traceback" not in done.stderr
    assert not (repo / ".pipeline/cache").exists()
    assert not (tmp_path / "x").exists()
