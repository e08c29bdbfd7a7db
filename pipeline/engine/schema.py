"""The engine's GraphQL schema, kept between runs.

Each time it connects, the SDK asks the engine for its whole schema (an introspection query),
from which it builds every query: 0.35-0.45 s of each run's start on v0.21.8, more than the
rest of the session's start together. The answer depends only on the engine's version and on
the client that asks (the CLI that opens the session and the SDK with its GraphQL library), so
it is kept in a folder (the project's ``.pipeline/engine``), one file per client, and handed to
the SDK's GraphQL client (gql: its public ``introspection`` and ``schema``) in place of the
query while the session starts. Once connected, the engine's version is asked (a few ms): a
kept schema of another version is fetched anew at once and replaces the kept one, before any
query is built from it. A file that cannot be read or written only costs the query.

Not kept in a session the CLI of ``dagger run`` opened (``-v`` under it): that CLI is not known
here, so neither is the client.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagger import dag
from gql.client import AsyncClientSession
from graphql import build_client_schema

from pipeline.core.log import get_logger
from pipeline.engine.enginecheck import CLI_BIN, RUNNER_HOST, SESSION_PORT

if TYPE_CHECKING:
    from collections.abc import Iterator

FORMAT = 1


def client_key(environ: dict[str, str] | None = None) -> str | None:
    """What decides the schema a session is given, but the engine's version (checked once
    connected): the SDK and its GraphQL library, the CLI that opens the session (its file),
    and the engine it is sent to. None in a session this process did not open."""
    env = os.environ if environ is None else environ
    if env.get(SESSION_PORT):
        return None
    cli = env.get(CLI_BIN) or shutil.which("dagger", path=env.get("PATH"))
    try:
        found = os.stat(cli) if cli else None  # noqa: PTH116 - a str path, as which gives
    except OSError:
        found = None
    client = [
        FORMAT,
        metadata.version("dagger-io"),
        metadata.version("gql"),
        os.path.realpath(cli) if cli and found else None,
        [found.st_size, found.st_mtime_ns] if found else None,
        env.get(RUNNER_HOST, ""),
    ]
    return hashlib.sha256(json.dumps(client).encode()).hexdigest()[:32]


@dataclass
class Kept:
    """One client's kept schema, and what became of it in this session."""

    path: Path | None  # None: nothing is kept for this session
    engine: str | None = None  # the version the kept schema was given by
    session: AsyncClientSession | None = None  # the SDK's GraphQL session, once it asked
    given: bool = False  # the kept schema stood in for the query

    def read(self) -> dict[str, Any] | None:
        if self.path is None:
            return None
        try:
            kept: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        good = isinstance(kept, dict) and kept.get("format") == FORMAT
        if not good or not isinstance(kept.get("introspection"), dict):
            return None
        self.engine = kept.get("engine")
        return kept

    def write(self, engine: str) -> None:
        """Keep the session's schema (a unique temporary file renamed into place)."""
        if self.path is None or self.session is None:
            return
        introspection = self.session.client.introspection
        if not introspection:
            return
        kept = {"format": FORMAT, "engine": engine, "introspection": introspection}
        tmp = None
        try:
            # the GraphQL library reads enum values (directive locations) into Python enums:
            # kept by name, as the engine's answer spells them
            text = json.dumps(kept, default=_by_name)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".schema.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            Path(tmp).replace(self.path)
        except (OSError, TypeError, ValueError):
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            return
        self.engine = engine


def _by_name(value: object) -> str:
    if isinstance(value, Enum):
        return value.name
    raise TypeError(f"{type(value).__name__} is not JSON")


def _server_validates(_document: object) -> None:
    """The GraphQL client's check of each query against the schema, skipped: the engine
    checks every query it is sent. v0.21's SDK skips it itself; v0.11's ran it on every
    query, about 0.1 CPU-seconds of a one-line edit's start."""


@contextlib.contextmanager
def offered(folder: Path | None) -> Iterator[Kept]:
    """While the SDK connects in this block: the kept schema, if any, given in place of its
    introspection query, else the query's answer noted for ``settle``; either way, queries
    are checked by the engine alone (``_server_validates``)."""
    key = client_key() if folder is not None else None
    kept = Kept(folder / f"schema-{key}.json" if folder is not None and key else None)
    original = AsyncClientSession.fetch_schema

    async def fetch_schema(session: AsyncClientSession) -> None:
        kept.session = session
        session.client.validate = _server_validates  # type: ignore[method-assign,assignment]
        found = kept.read()
        if found is None:
            await original(session)
            return
        try:
            built = build_client_schema(found["introspection"])
        except (TypeError, ValueError, KeyError):  # not a schema after all: ask for it
            await original(session)
            return
        session.client.introspection = found["introspection"]
        session.client.schema = built
        kept.given = True

    AsyncClientSession.fetch_schema = fetch_schema  # type: ignore[method-assign,assignment]
    try:
        yield kept
    finally:
        AsyncClientSession.fetch_schema = original  # type: ignore[method-assign]


async def settle(kept: Kept) -> str:
    """The engine's version, asked once connected; the schema fetched anew if the kept one
    was another version's, and the session's schema kept when it is new."""
    version = await dag.version()
    if kept.session is None or kept.path is None:
        return version
    source = "kept"
    if kept.given and kept.engine != version:
        await AsyncClientSession.fetch_schema(kept.session)
        kept.given, source = False, f"asked: the kept one is {kept.engine}'s"
    if not kept.given:
        kept.write(version)
        source = source if source != "kept" else "asked"
    get_logger().debug("engine_schema", engine=version, source=source, kept=str(kept.path))
    return version
