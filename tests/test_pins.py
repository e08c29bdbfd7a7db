import json
import re
import tomllib
from importlib.metadata import version

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
