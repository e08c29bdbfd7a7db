"""structlog, configured once: console on a TTY, JSON lines otherwise, on stderr.

structlog (with rich beside it) takes a noticeable part of a second to import, so it is
imported only by a run that logs: ``plan`` and ``--help`` never pay for it.

Every line goes to stderr whole: the run's events and, with ``-v``, the Dagger CLI's progress
(``progress_lines``) are written a line at a time under one lock, so no event is ever split
by the CLI's output, which it writes in pieces.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from collections.abc import Iterator

    import structlog.typing

_LOCK = threading.Lock()


class _Stderr:
    """What structlog writes to: each write (a whole event line) goes to stderr at once."""

    def write(self, text: str) -> None:
        _emit(text)

    def flush(self) -> None:
        pass


def _emit(text: str) -> None:
    with _LOCK:
        sys.stderr.write(text)
        sys.stderr.flush()


@contextlib.contextmanager
def progress_lines() -> Iterator[TextIO | None]:
    """A file for the Dagger CLI's progress (the SDK's ``log_output``): a pipe whose lines a
    thread copies to stderr whole, between the run's events. On a terminal, stderr itself
    (the CLI draws its progress there as on its own)."""
    if sys.stderr.isatty():
        yield sys.stderr
        return
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, encoding="utf-8", errors="replace")

    def pump() -> None:
        with reader:
            for line in reader:
                _emit(line if line.endswith("\n") else line + "\n")

    thread = threading.Thread(target=pump, name="dagger-progress", daemon=True)
    thread.start()
    try:
        with os.fdopen(write_fd, "w", encoding="utf-8") as writer:
            yield writer
    finally:
        thread.join(timeout=5)  # the CLI has exited: its copy of the pipe is closed


def configure(verbose: bool = False, json: bool | None = None) -> None:
    import structlog

    as_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.INFO
        ),
        logger_factory=structlog.WriteLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]  # write and flush are all it uses
        cache_logger_on_first_use=False,
    )


def get_logger() -> structlog.typing.FilteringBoundLogger:
    import structlog

    return structlog.get_logger("pipeline")  # type: ignore[no-any-return]
