"""One connection to the engine, for the whole run."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING

import dagger

from pipeline.engine.enginecheck import (
    RUNNER_HOST,
    START_ONE,
    EngineUnreachableError,
    require_engine,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def engine_session(verbose: bool) -> AsyncIterator[None]:
    """One connection to the engine, for the whole run. Whether an engine can be reached is
    asked first (enginecheck), and a session that still fails to start is one clear error
    naming the runner, never a traceback."""
    require_engine()
    config = dagger.Config(log_output=sys.stderr if verbose else None)
    try:
        async with dagger.connection(config):
            yield
    except dagger.ProvisionError as exc:
        where = os.environ.get(RUNNER_HOST) or "the Dagger CLI's default engine"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EngineUnreachableError(
            f"no engine session could be started with {where}: {first}; fix: {START_ONE}"
        ) from None


async def engine_version() -> str:
    """The version of the engine a session reaches (``v0.21.8``), asked in a session of its
    own with no progress shown. Call ``require_engine`` first: it fails at once, naming the
    fix, where this would wait for the SDK's own provisioning."""
    from dagger import dag

    async with dagger.connection(dagger.Config(log_output=None)):
        return await dag.version()
