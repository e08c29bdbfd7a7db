"""pipeline.engine imports the SDK without beartype's runtime checks, and leaves the
environment, and Python's own checks, as they were given."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

_PROBE = (
    "import os, pipeline.engine\n"
    "from dagger.client.gen import Container\n"
    "print(os.environ.get('PYTHONOPTIMIZE'), hasattr(Container.with_exec, '__wrapped__'))\n"
    "assert False, 'asserts still run'\n"
)


@pytest.mark.parametrize("given", [None, "0", "2"])
def test_the_sdk_loads_unchecked_and_the_environment_is_left_as_given(given: str | None):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONOPTIMIZE"}
    if given is not None:
        env["PYTHONOPTIMIZE"] = given
    # -c runs under the variable as given: under "2" Python itself optimises (asserts go)
    probe = [sys.executable, "-c", _PROBE]
    done = subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert done.stdout.split() == [str(given), "False"], done.stderr
    optimised = given not in (None, "0")
    assert (done.returncode == 0) == optimised, done.stderr
    if not optimised:
        assert "asserts still run" in done.stderr
