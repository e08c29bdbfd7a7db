"""The command line without an engine: plan, usage and config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    assert "--jobs (or PIPELINE_JOBS): 'many' is not a number" in done.stderr
    assert "Traceback" not in done.stderr


def _monorepo(root: Path, manifest: str = 'tier = "base"\ncommand = ["python", "-m", "a"]\n',
              config: str = 'services = ["s/*"]\n[tiers.base]\n') -> Path:  # fmt: skip
    root.mkdir(parents=True)
    (root / "pipeline.toml").write_text(config)
    (root / "s" / "a" / "a").mkdir(parents=True)
    (root / "s" / "a" / "a" / "__init__.py").write_text("")
    (root / "s" / "a" / "service.toml").write_text(manifest)
    return root


BAD_INPUTS = {
    "string for a bool": (
        {"config": 'services = ["s/*"]\ncompile_bytecode = "yes"\n[tiers.base]\n'},
        "pipeline.toml: compile_bytecode:",
    ),
    "bool for a port": (
        {"manifest": 'tier = "base"\ncommand = ["x"]\nport = true\n'},
        "service.toml: port:",
    ),
    "absolute services glob": (
        {"config": 'services = ["/etc/*"]\n[tiers.base]\n'},
        "pipeline.toml: services[0]: /etc/* reaches outside the project",
    ),
    "services glob leaving the project": (
        {"config": 'services = ["../x/*"]\n[tiers.base]\n'},
        "pipeline.toml: services[0]",
    ),
    "tier requirements outside the project": (
        {"config": 'services = ["s/*"]\n[tiers.base]\nrequirements = ["/etc/hostname"]\n'},
        "tiers.base.requirements[0]: /etc/hostname is outside the project",
    ),
    "service requirements outside the project": (
        {"manifest": 'tier = "base"\ncommand = ["x"]\nrequirements = "../../../r.txt"\n'},
        "service.toml: requirements:",
    ),
    "empty env name": (
        {"manifest": 'tier = "base"\ncommand = ["x"]\nenv = { "" = "1" }\n'},
        "service.toml: env.",
    ),
    "env name with a space": (
        {"manifest": 'tier = "base"\ncommand = ["x"]\nenv = { "A B" = "1" }\n'},
        "service.toml: env.A B",
    ),
    "include matching nothing": (
        {"manifest": 'tier = "base"\ncommand = ["x"]\ninclude = ["nope/**"]\n'},
        "service.toml: include: matches no file",
    ),
    "empty command": ({"manifest": 'tier = "base"\ncommand = []\n'}, "command: is empty"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_clear_error(tmp_path: Path, case: str):
    files, message = BAD_INPUTS[case]
    repo = _monorepo(tmp_path / "repo", **files)
    done = cli("plan", "--project-dir", str(repo))
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert "fix:" in done.stderr
    assert "Traceback" not in done.stderr


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
