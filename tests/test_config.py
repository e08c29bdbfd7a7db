"""Loading and validating the root config and service manifests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipeline import session
from pipeline.core import inputs, settings
from pipeline.core.errors import ConfigError, UsageError
from pipeline.session import build_settings
from tests.conftest import ROOT


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    write(
        tmp_path / "pipeline.toml",
        """
        services = ["apps/*"]
        [tiers.base]
        requirements = ["req/base.txt"]
        [tiers.web]
        extends = "base"
    """,
    )
    write(tmp_path / "req/base.txt", "six==1.16.0\n")
    write(
        tmp_path / "apps/api/service.toml",
        """
        tier = "web"
        command = ["python", "-m", "api"]
        port = 8000
        health_path = "/health"
    """,
    )
    return tmp_path


def test_example_monorepo_loads():
    project = session.load(ROOT)
    assert list(project.tiers) == ["base", "backend", "ai"]
    assert [t.image_name for t in project.tiers.values()] == ["base", "backend-base", "ai-base"]
    services = {"gateway", "users", "worker", "inference", "reports", "greeter", "echo"}
    assert set(project.services) == services
    assert project.services["greeter"].spec.probe.kind == "grpc"  # type: ignore[union-attr]
    assert project.services["echo"].spec.probe.kind == "tcp"  # type: ignore[union-attr]
    assert project.services["inference"].tier == "ai"
    assert [t.name for t in project.chain("ai")] == ["base", "backend", "ai"]


def test_other_layout_and_defaults(repo: Path):
    project = session.load(repo)
    api = project.services["api"]
    assert api.path == repo / "apps" / "api"
    assert api.spec.include == ["**"]
    assert project.spec.base_image == "python:3.11-slim-bookworm"
    assert project.spec.user == "app"


def test_tool_pipeline_in_pyproject(repo: Path):
    text = (repo / "pipeline.toml").read_text().replace("[tiers.", "[tool.pipeline.tiers.")
    (repo / "pipeline.toml").unlink()
    write(repo / "pyproject.toml", "[tool.pipeline]\n" + text)
    assert session.load(repo).config_file.name == "pyproject.toml"


def error_of(repo: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        session.load(repo)
    return info.value


def test_unknown_field_names_file_field_and_fix(repo: Path):
    manifest = repo / "apps/api/service.toml"
    manifest.write_text(manifest.read_text() + 'comand = ["x"]\n')
    err = error_of(repo)
    assert err.file == str(manifest)
    assert err.field == "comand"
    assert "command" in err.fix  # lists the real fields


def test_missing_required_field(repo: Path):
    write(repo / "apps/api/service.toml", 'tier = "web"\n')
    err = error_of(repo)
    assert (err.field, err.problem) == ("command", "is required")
    assert "command the container runs" in err.fix


def test_bad_port_type(repo: Path):
    manifest = repo / "apps/api/service.toml"
    manifest.write_text(manifest.read_text().replace("8000", '"http"'))
    assert error_of(repo).field == "port"


def test_health_path_needs_port(repo: Path):
    manifest = repo / "apps/api/service.toml"
    manifest.write_text(manifest.read_text().replace("port = 8000\n", ""))
    err = error_of(repo)
    assert err.field == "health_path"
    assert "port" in err.fix


def test_unknown_tier_lists_known_ones(repo: Path):
    manifest = repo / "apps/api/service.toml"
    manifest.write_text(manifest.read_text().replace('"web"', '"gpu"'))
    err = error_of(repo)
    assert err.field == "tier"
    assert "base, web" in err.fix


def test_bad_tier_name(repo: Path):
    text = (repo / "pipeline.toml").read_text().replace("[tiers.web]", "[tiers.Web_1]")
    (repo / "pipeline.toml").write_text(text)
    assert error_of(repo).field.startswith("tiers.Web_1")


def test_missing_tier_requirements_file(repo: Path):
    (repo / "req/base.txt").unlink()
    err = error_of(repo)
    assert err.field == "tiers.base.requirements[0]"
    assert "req/base.txt does not exist" in err.problem


def test_missing_service_requirements_file(repo: Path):
    manifest = repo / "apps/api/service.toml"
    manifest.write_text(manifest.read_text() + 'requirements = "requirements.txt"\n')
    err = error_of(repo)
    assert err.field == "requirements"
    assert err.file == str(manifest)


def test_duplicate_service_names(repo: Path):
    write(repo / "apps/other/service.toml", 'name = "api"\ntier = "web"\ncommand = ["x"]\n')
    err = error_of(repo)
    assert err.field == "name"
    assert "apps/api/service.toml" in err.problem


def test_tier_cycle_and_unknown_parent(repo: Path):
    cfg = repo / "pipeline.toml"
    cfg.write_text(cfg.read_text() + '[tiers.a]\nextends = "b"\n[tiers.b]\nextends = "a"\n')
    assert "cycle" in error_of(repo).problem
    cfg.write_text(cfg.read_text().replace('extends = "a"', 'extends = "nope"'))
    assert "unknown tier 'nope'" in error_of(repo).problem


def test_no_services_found(repo: Path):
    cfg = repo / "pipeline.toml"
    cfg.write_text(cfg.read_text().replace("apps/*", "src/*"))
    err = error_of(repo)
    assert err.field == "services"


def test_invalid_toml(repo: Path):
    (repo / "apps/api/service.toml").write_text("tier = \n")
    assert "not valid TOML" in error_of(repo).problem


def test_no_config_at_all(tmp_path: Path):
    with pytest.raises(ConfigError, match="no pipeline configuration found"):
        session.load(tmp_path)


def test_selection_by_name_and_tier():
    project = session.load(ROOT)
    assert [s.name for s in project.select(tiers=["ai"])] == ["inference"]
    assert [s.name for s in project.select(["worker", "users"])] == ["users", "worker"]
    with pytest.raises(UsageError, match="unknown service 'nope'"):
        project.select(["nope"])
    with pytest.raises(UsageError, match="unknown tier 'gpu'"):
        project.select(tiers=["gpu"])
    with pytest.raises(UsageError, match="matches no service"):
        project.select(["inference"], ["backend"])


def test_changed_since_selects_affected_services(tmp_path: Path):
    from pipeline.edges.git import changed_since
    from tests.conftest import copy_example, git

    repo = copy_example(tmp_path / "repo")
    first = git(repo, "rev-parse", "HEAD")

    def selected() -> list[str]:
        project = session.load(repo)
        reads = inputs.reads(project, build_settings(project))
        return [s.name for s in project.select(changed=changed_since(repo, first), reads=reads)]

    assert selected() == []  # nothing changed, nothing to build
    (repo / "services/worker/worker/jobs.py").write_text("# edited\n")
    assert selected() == ["worker"]
    (repo / "requirements/ai.txt").write_text("numpy==2.1.3\n")
    assert selected() == ["inference", "worker"]  # the ai tier's file touches only ai services
    (repo / "requirements/base.txt").write_text("pydantic==2.9.2\n")
    assert selected() == ["echo", "gateway", "greeter", "inference", "reports", "users", "worker"]
    git(repo, "checkout", "--", ".")
    # a file in a service folder that no input names changes nothing; a deleted one does
    (repo / "services/users/NOTES.md").write_text("notes\n")
    (repo / "services/users/service.toml").write_text(
        (repo / "services/users/service.toml").read_text() + 'exclude = ["NOTES.md"]\n'
    )
    git(repo, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qam", "exclude")
    first = git(repo, "rev-parse", "HEAD")
    (repo / "services/users/NOTES.md").write_text("more notes\n")
    assert selected() == []
    (repo / "services/worker/worker/jobs.py").unlink()
    assert selected() == ["worker"]
    with pytest.raises(UsageError, match="no such commit"):
        changed_since(repo, "does-not-exist")


def test_apt_package_names_are_checked(repo: Path):
    manifest = repo / "apps/api/service.toml"
    manifest.write_text(manifest.read_text() + 'apt = ["curl", "libpq5; rm -rf /"]\n')
    err = error_of(repo)
    assert err.field == "apt.1"
    assert "Debian packages" in err.fix
    manifest.write_text(
        manifest.read_text().replace('"libpq5; rm -rf /"', '"libpq5=15.8-0+deb12u1"')
    )
    assert session.load(repo).services["api"].spec.apt == ["curl", "libpq5=15.8-0+deb12u1"]


def test_what_a_requirements_file_may_say_still_loads(repo: Path):
    """Refusing a nested -r or -c leaves every other line alone: index options, hashes,
    comments, a byte-order mark, and a line that only mentions -r."""
    (repo / "req/base.txt").write_bytes(
        b"\xef\xbb\xbf--extra-index-url https://pypi.example.com/simple\n"
        b"six==1.16.0 --hash=sha256:" + b"0" * 64 + b"  # see -r notes\n"
        b"# -r other.txt, commented out\n"
    )
    project = session.load(repo)
    assert project.tiers["base"].requirements == (repo / "req/base.txt",)


def test_commands_and_images_that_are_right_still_load(repo: Path):
    (repo / "pipeline.toml").write_text(
        'base_image = "localhost:5000/py/base:3.11@sha256:'
        + "a" * 64
        + '"\n'
        + (repo / "pipeline.toml").read_text()
    )
    write(
        repo / "apps/api/service.toml",
        """
        tier = "web"
        command = "python -m api --greeting 'héllo \\t'"
        smoke = ["python", "-c", "print('\\u00e9')"]
        env = { A = "" }
        port = 8000
        health_path = "/health"
    """,
    )
    project = session.load(repo)
    assert project.spec.base_image.startswith("localhost:5000/py/base:3.11@sha256:")
    assert project.services["api"].spec.smoke == ["python", "-c", "print('\u00e9')"]


@pytest.mark.parametrize(
    "url",
    [
        "https://pypi.example.com/simple",
        "http://ci:tok@127.0.0.1:9/simple",
        "https://user:p%40ss@[::1]:8443/simple/",
    ],
)
def test_index_urls_that_are_right_pass_the_check(url: str):
    settings.check_secret_variables({settings.INDEX_URL_ENV: url})


def test_a_pem_ca_bundle_passes_the_check(tmp_path: Path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text(
        "# Főtanúsítvány\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    )
    settings.check_secret_variables({settings.CA_BUNDLE_ENV: str(bundle)})
