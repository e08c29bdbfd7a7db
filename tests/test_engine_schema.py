"""The engine's schema, kept between runs (pipeline/engine/schema.py): a run after the first
starts without asking the engine for its schema, and a kept schema that is not this engine's
(another version's, or damaged) is never what a run's queries are built from."""

from __future__ import annotations

import inspect
import json
import re
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest

from pipeline.engine import schema
from pipeline.engine.enginecheck import CLI_BIN, RUNNER_HOST, SESSION_PORT
from tests.conftest import copy_example, pipeline_in

if TYPE_CHECKING:
    from pathlib import Path


def _edit_and_build(repo: Path, base_image: str, n: int) -> tuple[dict[str, str], str]:
    """A real build (the worker's code changed), verbose: its engine_schema event, and the
    engine the result names."""
    code = repo / "services" / "worker" / "worker" / "jobs.py"
    code.write_text(code.read_text() + f"\n# edit {n}\n")
    done = pipeline_in(repo, base_image, "build", "--no-test", "-v")
    assert done.returncode == 0, done.stdout + done.stderr
    events = [
        json.loads(line)
        for line in done.stderr.splitlines()
        if line.startswith("{") and '"engine_schema"' in line
    ]
    built = [
        json.loads(line)
        for line in done.stderr.splitlines()
        if line.startswith("{") and '"service_built"' in line
    ]
    assert len(events) == 1, done.stderr
    assert [b["status"] for b in built] == ["ok"]
    return events[0], built[0]["engine"].split(" ")[0]


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_run_keeps_the_schema_the_next_one_uses_and_a_stale_one_is_asked_again(
    tmp_path: Path, base_image: str
):
    repo = copy_example(tmp_path / "repo", services=("worker",))
    first, engine = _edit_and_build(repo, base_image, 1)
    assert first["source"] == "asked"
    kept = repo / ".pipeline" / "engine"
    files = list(kept.glob("schema-*.json"))
    assert [str(f) for f in files] == [first["kept"]]
    stored = json.loads(files[0].read_text())
    assert stored["engine"] == engine == first["engine"]
    assert "__schema" in stored["introspection"]

    second, _ = _edit_and_build(repo, base_image, 2)
    assert second["source"] == "kept"

    # another engine version's schema: asked again before any query is built from it
    stored["engine"] = "v0.0.1"
    files[0].write_text(json.dumps(stored))
    third, _ = _edit_and_build(repo, base_image, 3)
    assert third["source"] == "asked: the kept one is v0.0.1's"
    assert json.loads(files[0].read_text())["engine"] == engine

    # a damaged one is not read
    files[0].write_text('{"format": 1, "engine": "' + engine + '", "introspection": {"x": 1}}')
    fourth, _ = _edit_and_build(repo, base_image, 4)
    assert fourth["source"] == "asked"
    assert "__schema" in json.loads(files[0].read_text())["introspection"]
    assert not list(kept.glob(".schema.*"))  # no temporary file left behind


def test_the_client_decides_the_key_and_a_session_of_dagger_run_keeps_nothing(tmp_path: Path):
    cli = tmp_path / "dagger"
    cli.write_text("#!/bin/sh\n")
    env = {CLI_BIN: str(cli), RUNNER_HOST: "unix:///run/a/buildkitd.sock", "PATH": ""}
    key = schema.client_key(env)
    assert key is not None
    assert re.fullmatch(r"[0-9a-f]{32}", key)
    assert schema.client_key(dict(env)) == key
    assert schema.client_key({**env, RUNNER_HOST: "tcp://127.0.0.1:1234"}) != key
    cli.write_text("#!/bin/sh\n# another build of the CLI\n")
    assert schema.client_key(env) != key
    assert schema.client_key({**env, SESSION_PORT: "40000"}) is None


def test_a_schema_that_cannot_be_kept_leaves_nothing_behind(tmp_path: Path):
    """Keeping is best effort: a file that cannot be put in place costs only the next run's
    query, and no temporary file stays."""
    target = tmp_path / "schema-x.json"
    target.mkdir()  # the rename onto it fails
    kept = schema.Kept(target)
    kept.session = SimpleNamespace(client=SimpleNamespace(introspection={"__schema": {}}))  # type: ignore[assignment]
    kept.write("v0.21.8")
    assert kept.engine is None
    assert list(tmp_path.iterdir()) == [target]
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("keep", [True, False])
def test_a_session_s_queries_are_checked_by_the_engine_alone(tmp_path: Path, keep: bool):
    """The GraphQL client no longer checks each query against the schema (the engine checks
    every query it is sent), whether the schema was kept or asked for."""
    import anyio
    from gql import Client, GraphQLRequest
    from gql.client import AsyncClientSession
    from graphql import build_schema, introspection_from_schema, parse

    served = build_schema("type Query { a: Int }")
    # what Client.validate takes: a request on gql 4 (v0.21's SDK), a document on gql 3
    unknown: object = parse("{ nope }")
    if "request" in inspect.signature(Client.validate).parameters:
        unknown = GraphQLRequest(unknown)
    with pytest.raises(Exception, match="nope"):  # a client with the schema checks queries
        Client(schema=served).validate(unknown)
    introspection = introspection_from_schema(served)
    if keep:
        kept = {"format": schema.FORMAT, "engine": "v0.21.8", "introspection": introspection}
        (tmp_path / "schema-k.json").write_text(json.dumps(kept))
    client = Client(introspection=introspection)
    session = AsyncClientSession(client)
    original = AsyncClientSession.fetch_schema

    async def asked(session: AsyncClientSession) -> None:  # what the engine would answer
        session.client.introspection, session.client.schema = introspection, served

    AsyncClientSession.fetch_schema = asked  # type: ignore[method-assign,assignment]
    try:
        with schema.offered(tmp_path) as found:
            found.path = tmp_path / "schema-k.json"
            anyio.run(AsyncClientSession.fetch_schema, session)
    finally:
        AsyncClientSession.fetch_schema = original  # type: ignore[method-assign]
    assert found.given is keep
    assert client.schema is not None
    assert client.validate(unknown) is None
