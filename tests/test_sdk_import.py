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


def test_query_objects_share_one_converter_until_a_result_is_structured(monkeypatch):
    """A chain of calls makes one converter (for the calls' arguments and scalar results), not
    one per object; a result structured into objects binds them to the query that returned
    them, and the arguments are turned into JSON as the SDK's own converter does."""
    import dagger
    from dagger.client import _core

    import pipeline.engine  # noqa: F401 - installs the lazy converters

    made = []
    real = _core.make_json_converter

    def counted(**kwargs: object) -> object:
        made.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(_core, "make_json_converter", counted)
    ctr = dagger.dag.container()
    for n in range(50):
        ctr = ctr.with_env_variable(f"N{n}", str(n), expand=bool(n % 2))
    ctr = ctr.with_exec(["true"])
    assert len(made) <= 1  # the shared one, made once per process (here perhaps before)
    first, second = dagger.dag.container()._ctx, dagger.dag.directory()._ctx  # noqa: SLF001
    bound = [ctx.converter.structure({}, dagger.EnvVariable)._ctx for ctx in (first, second)]  # noqa: SLF001
    assert bound[0] is first
    assert bound[1] is second
    # an ID, a string, a number or an enum structured makes no converter, and is what the
    # SDK's own converter makes of it
    made.clear()
    for ctx in (first, second):
        assert ctx.converter.structure("abc", dagger.ContainerID) == dagger.ContainerID("abc")
        assert type(ctx.converter.structure("abc", dagger.ContainerID)) is dagger.ContainerID
        assert ctx.converter.structure(3, int) == 3
        protocol = ctx.converter.structure(dagger.NetworkProtocol.UDP.name, dagger.NetworkProtocol)
        assert protocol is dagger.NetworkProtocol.UDP
    assert made == []
    args = {"a": dagger.ImageLayerCompression.Zstd, "b": [1, "x"], "c": None}
    sdk_own = real(omit_if_default=True, detailed_validation=False)
    if hasattr(_core, "configure_converter_enum"):  # v0.21's enums go by member name
        _core.configure_converter_enum(sdk_own)
    assert first.converter.unstructure(args) == sdk_own.unstructure(args)
