"""One connection to the engine, for the whole run."""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import TYPE_CHECKING

import dagger

from pipeline.core import log
from pipeline.engine import schema
from pipeline.engine.enginecheck import (
    CLI_BIN,
    RUNNER_HOST,
    SESSION_PORT,
    START_ONE,
    EngineUnreachableError,
    require_engine,
)

# What `dagger run` gives its command: its session, and where the command's traces go (its
# progress shows them).
_PARENT_SESSION = (SESSION_PORT, "DAGGER_SESSION_TOKEN", "TRACEPARENT")


@contextlib.contextmanager
def _quiet_under_dagger_run(verbose: bool) -> Iterator[None]:
    """Under `dagger run`, a run opens a session of its own with no progress shown, so the
    CLI's progress holds nothing of it and the run's summary is the last thing printed; its
    full progress is `-v`, which uses `dagger run`'s session (every step, traces included).
    Nothing changes outside `dagger run`, or when no CLI is there to open a session with."""
    cli = os.environ.get(CLI_BIN) or shutil.which("dagger")
    if verbose or not os.environ.get(SESSION_PORT) or not cli:
        yield
        return
    saved = {
        k: os.environ.pop(k)
        for k in list(os.environ)
        if k in _PARENT_SESSION or k.startswith("OTEL_")
    }
    os.environ[CLI_BIN] = cli
    try:
        yield
    finally:
        os.environ.update(saved)
        if CLI_BIN not in saved:
            os.environ.pop(CLI_BIN, None)


# The Dagger CLI's environment switch for --silent (v0.21 reads it; v0.11's CLI ignores it).
SILENT = "DAGGER_SILENT"


@contextlib.contextmanager
def _silent_unless(verbose: bool) -> Iterator[None]:
    """While a session's CLI starts: silent, unless the run shows its progress (``-v``) or the
    environment already says. The SDK starts ``dagger session`` with this process's
    environment, and a session that nobody reads the progress of still keeps every span for
    its progress display unless silent: CPU that grows faster than the number of services
    (the CLI of a cold build of 60 services spent 12.9 CPU-seconds with this process, 6.7
    silent; of 200, 86). The variable is put back once the CLI has started."""
    if verbose or SILENT in os.environ:
        yield
        return
    os.environ[SILENT] = "1"
    try:
        yield
    finally:
        os.environ.pop(SILENT, None)


if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path


@contextlib.asynccontextmanager
async def engine_session(verbose: bool, kept: Path | None = None) -> AsyncIterator[None]:
    """One connection to the engine, for the whole run. Whether an engine can be reached is
    asked first (enginecheck), and a session that still fails to start is one clear error
    naming the runner, never a traceback. The engine's schema is kept in the folder ``kept``
    between runs (see schema.py)."""
    require_engine()
    try:
        shown = log.progress_lines() if verbose else contextlib.nullcontext(None)
        with _quiet_under_dagger_run(verbose), shown as progress:
            config = dagger.Config(log_output=progress)
            async with contextlib.AsyncExitStack() as stack:
                with schema.offered(kept) as offer, _silent_unless(verbose):
                    await stack.enter_async_context(dagger.connection(config))
                await schema.settle(offer)
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

    async with contextlib.AsyncExitStack() as stack:
        with _silent_unless(verbose=False):
            await stack.enter_async_context(dagger.connection(dagger.Config(log_output=None)))
        return await dag.version()
