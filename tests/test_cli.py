"""The command line without an engine: plan, usage and config errors."""

from __future__ import annotations

import json
from pathlib import Path

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
    (tmp_path / "s" / "a" / "service.toml").write_text('tier = "base"\ncommand = "python"\n')
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
