"""The run's output on stderr: with -v the Dagger CLI writes its progress there too, in pieces
(a step's number, then its text), while the run logs its events; a reader of the JSON lines
must still get every event whole, on a line of its own."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import TYPE_CHECKING

from pipeline.core import log

if TYPE_CHECKING:
    import pytest

# what the CLI does: a step's number, a pause, then the rest of its line
CLI = """
import sys, time
for i in range(40):
    sys.stderr.write(f"{i:<4}: "); sys.stderr.flush()
    time.sleep(0.003)
    sys.stderr.write("Container.withExec DONE\\n"); sys.stderr.flush()
"""


def test_the_cli_s_progress_never_splits_an_event(capfd: pytest.CaptureFixture[str]):
    log.configure(verbose=True, json=True)
    logger = log.get_logger()
    with log.progress_lines() as progress:
        assert progress is not None
        cli = subprocess.Popen([sys.executable, "-c", CLI], stderr=progress)
        events = 0
        while cli.poll() is None:
            logger.info("service_built", service="users", n=events)
            events += 1
        assert cli.wait() == 0
    lines = capfd.readouterr().err.splitlines()
    progress_lines = [x for x in lines if re.fullmatch(r"\d+ +: Container\.withExec DONE", x)]
    event_lines = [json.loads(x) for x in lines if x.startswith("{")]
    assert len(progress_lines) == 40
    assert [e["n"] for e in event_lines] == list(range(events))
    assert len(lines) == 40 + events  # nothing else: no line holds pieces of both
