"""Every option declared once (core/options.py): the parser is derived from the table, and a
run's values resolve by precedence, checked, naming where a bad one came from."""

from __future__ import annotations

import pytest

from pipeline import cli
from pipeline.core import options
from pipeline.core.errors import UsageError


def _sub(command: str):
    parser = cli._parser()  # noqa: SLF001 - the parser the CLI runs
    (action,) = [a for a in parser._actions if a.dest == "command"]  # noqa: SLF001
    return action.choices[command]  # type: ignore[index]


@pytest.mark.parametrize("option", options.OPTIONS, ids=lambda o: o.dest)
def test_every_option_is_on_each_of_its_commands_with_its_variable(option: options.Option):
    for command in option.commands:
        text = _sub(command).format_help()
        assert option.flags[-1] in text
        if option.env:
            assert option.env in text


def test_the_command_line_wins_over_the_environment_over_the_default():
    env = {"PIPELINE_JOBS": "7", "PIPELINE_CACHE_SCOPE": "from-env"}
    chosen = options.chosen("build", {"jobs": "3"}, env)
    assert chosen.jobs == 3  # the flag, checked into a number
    assert chosen.cache_scope == "from-env"
    assert chosen.base_image is None  # left to the config
    assert options.chosen("build", {}, {}).jobs is None  # the engine machine's logical CPUs
    assert options.chosen("build", {}, {"PIPELINE_JOBS": ""}).jobs is None  # empty is unset


@pytest.mark.parametrize(
    ("given", "env", "said"),
    [
        ({"jobs": "x"}, {}, "--jobs: 'x' is not a number"),
        ({}, {"PIPELINE_JOBS": "0"}, "PIPELINE_JOBS must be at least 1"),
        ({"cache_scope": "../x"}, {}, "--cache-scope: '../x' cannot be a cache scope"),
        ({}, {"PIPELINE_BASE_IMAGE": "A B"}, "PIPELINE_BASE_IMAGE: 'A B' is not an image"),
    ],
)
def test_a_bad_value_names_where_it_came_from(given: dict, env: dict, said: str):
    with pytest.raises(UsageError, match="^" + said.replace("(", r"\(").replace(".", r"\.")):
        options.chosen("build", given, env)


def test_an_option_of_another_command_is_not_read():
    chosen = options.chosen("plan", {}, {"PIPELINE_JOBS": "many"})  # plan builds nothing
    with pytest.raises(AttributeError):
        _ = chosen.jobs
