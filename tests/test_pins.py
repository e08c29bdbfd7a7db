import json
import tomllib
from importlib.metadata import version

from tests.conftest import ROOT


def test_dagger_io_pin_matches_engine_version():
    engine = json.loads((ROOT / "dagger.json").read_text())["engineVersion"]
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if d.startswith("dagger-io=="))
    assert f"v{pin.split('==')[1]}" == engine
    assert f"v{version('dagger-io')}" == engine
