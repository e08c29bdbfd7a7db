"""structlog, configured once: console on a TTY, JSON lines otherwise, on stderr.

structlog (with rich beside it) takes a noticeable part of a second to import, so it is
imported only by a run that logs: ``plan`` and ``--help`` never pay for it.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import structlog.typing


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
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger() -> structlog.typing.FilteringBoundLogger:
    import structlog

    return structlog.get_logger("pipeline")  # type: ignore[no-any-return]
