"""A run spread over a pool of engines (``PIPELINE_ENGINES``): each service goes to the engine
its leaf tier hashes to (``core/placement.py``), so a tier is built on one engine and its
layers stay warm there. Each engine's share runs as the CLI itself, in a process of its own
reaching that engine (``_EXPERIMENTAL_DAGGER_RUNNER_HOST``), with the run's options; its
results come back through its JSON report.

An engine that cannot be reached before its share starts, or stops answering during it, is
marked down: the services it did not finish go to the next engine in their hash order, and
the run goes on. A share's own failures (a test that fails) stay failures. Nothing moves a
moving tag here: the run moves them once every share is done.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core import placement
from pipeline.core.log import get_logger
from pipeline.core.outcomes import Result, Status

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from pipeline.core.jobs import Job
    from pipeline.core.placement import Engine

# Set in a share's environment: the pool's name of its engine. A share records its results
# and writes its report, but leaves the run's history, summary and moving tags to the run.
MEMBER_ENV = "PIPELINE_POOL_ENGINE"
RUNNER_HOST = "_EXPERIMENTAL_DAGGER_RUNNER_HOST"
# what a share must not inherit: the parent's `dagger run` session, and the pool itself
DROPPED = ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN", "TRACEPARENT", "PIPELINE_ENGINES")
TAIL = 1500  # characters of a share's error output kept in a failed service's reason
WATCH_S = 2.0  # seconds between asking whether a share's engine still answers
SILENT_CHECKS = 2  # answers missed in a row before the engine is taken for lost


@dataclass
class PoolRun:
    """What happened on the pool: where each service ran, and the engines lost."""

    placed: dict[str, str] = field(default_factory=dict)  # service -> engine name
    lost: list[str] = field(default_factory=list)
    moved: dict[str, tuple[str, str]] = field(default_factory=dict)  # service -> (from, to)

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for name in self.placed.values():
            counts[name] = counts.get(name, 0) + 1
        said = ", ".join(
            f"{n} {c} service{'s' if c > 1 else ''}" for n, c in sorted(counts.items())
        )
        lines = [f"engines: {said}"]
        for engine in self.lost:
            moved = sorted(s for s, (a, _) in self.moved.items() if a == engine)
            lines.append(
                f"engine {engine} was lost: {', '.join(moved) or 'nothing'} moved to "
                + ", ".join(sorted({self.moved[s][1] for s in moved}))
                if moved
                else f"engine {engine} was lost before any service was placed on it"
            )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        return {
            "placed": dict(sorted(self.placed.items())),
            "lost": list(self.lost),
            "moved": {s: list(m) for s, m in sorted(self.moved.items())},
        }


def share_argv(
    command: str, services: Sequence[str], options: Sequence[str], report: Path
) -> list[str]:
    """The CLI's command line for one engine's share."""
    return [sys.executable, "-m", "pipeline", command, *services, *options, "--report", str(report)]


def _share_env(engine: Engine, environ: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in environ.items() if k not in DROPPED and not k.startswith("OTEL_")}
    env[RUNNER_HOST] = engine.url
    env[MEMBER_ENV] = engine.name
    return env


def _run_share(
    engine: Engine,
    command: str,
    names: list[str],
    options: Sequence[str],
    folder: Path,
    alive: Callable[[Engine], bool],
) -> tuple[dict[str, Result], int, str]:
    """One engine's share as the CLI: its results by service, its exit status, its stderr.
    The engine is asked every few seconds whether it still answers: a session whose engine
    died waits minutes for it, so the share is stopped at once instead."""
    report = folder / f"{engine.name}-{os.getpid()}-{len(names)}-{names[0]}.json"
    with tempfile.TemporaryFile("w+", encoding="utf-8") as err:
        share = subprocess.Popen(
            share_argv(command, names, options, report),
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            env=_share_env(engine, os.environ),
            start_new_session=True,  # its CLI and session processes are stopped with it
        )
        silent = 0
        while True:
            try:
                share.wait(timeout=WATCH_S)
                break
            except subprocess.TimeoutExpired:
                silent = 0 if alive(engine) else silent + 1
                if silent >= SILENT_CHECKS:  # the run says the engine was lost
                    os.killpg(share.pid, signal.SIGKILL)
                    share.wait()
                    break
        err.seek(0)
        stderr = err.read()
    sys.stderr.write(_relabelled(stderr, engine.name))
    results: dict[str, Result] = {}
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
        for item in data["services"]:
            result = Result.from_dict(item)
            results[result.service] = result
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no report: every service of the share is unanswered
    return results, share.returncode, stderr


def _relabelled(text: str, engine: str) -> str:
    """A share's JSON log lines with its engine named; its table and summary left out (the
    run prints one of its own)."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                out.append(line)
                continue
            if event.get("event") in ("service_built", "service_failed", "cache_registry"):
                continue  # the run says these once, for every service
            out.append(json.dumps({**event, "engine": engine}))
        elif line.startswith("pipeline: error"):
            out.append(f"{line} [engine {engine}]")
    return "".join(f"{line}\n" for line in out)


def run(
    engines: Sequence[Engine],
    work: Sequence[Job],
    command: str,
    options: Sequence[str],
    alive: Callable[[Engine], bool],
) -> tuple[list[Result], PoolRun]:
    """Every job built on the pool; engines that are down or die are left for the next in
    each service's hash order."""
    log = get_logger()
    pool = PoolRun()
    down: set[str] = set()
    for engine in engines:
        if not alive(engine):
            down.add(engine.name)
            pool.lost.append(engine.name)
            log.warning("engine_unreachable", engine=engine.name, detail="its services move on")
    tiers = {j.service.name: j.service.tier for j in work}
    results: dict[str, Result] = {}
    pending = [j.service.name for j in work]
    with tempfile.TemporaryDirectory(prefix="pipeline-pool-") as tmp:
        while pending:
            try:
                placed = placement.place({s: tiers[s] for s in pending}, engines, frozenset(down))
            except placement.NoEngineError as exc:
                for name in pending:
                    results[name] = Result(name, tiers[name], Status.FAILED, 0.0, reason=str(exc))
                break
            shares: dict[Engine, list[str]] = {}
            for name in pending:
                engine = placed[name]
                if name in pool.placed and pool.placed[name] != engine.name:
                    pool.moved[name] = (pool.placed[name], engine.name)
                pool.placed[name] = engine.name
                shares.setdefault(engine, []).append(name)
            log.info("pool_placed", shares={e.name: names for e, names in shares.items()})
            pending = _round(shares, command, options, Path(tmp), alive, results, tiers, pool)
            down.update(pool.lost)
    return [results[j.service.name] for j in work], pool


def _round(
    shares: Mapping[Engine, list[str]],
    command: str,
    options: Sequence[str],
    folder: Path,
    alive: Callable[[Engine], bool],
    results: dict[str, Result],
    tiers: Mapping[str, str],
    pool: PoolRun,
) -> list[str]:
    """Every engine's share at once; the services left unfinished by an engine lost meanwhile."""
    with ThreadPoolExecutor(max(1, len(shares))) as threads:
        running = {
            engine: threads.submit(_run_share, engine, command, names, options, folder, alive)
            for engine, names in shares.items()
        }
    again = []
    for engine, future in running.items():
        got, status, stderr = future.result()
        lost = not alive(engine)
        if lost:
            pool.lost.append(engine.name)
            get_logger().warning(
                "engine_lost", engine=engine.name, detail="its unfinished services move on"
            )
        for name in shares[engine]:
            result = got.get(name)
            if lost and (result is None or not result.ok):
                again.append(name)
                continue
            if result is None:
                tail = stderr.strip()[-TAIL:] or f"exit status {status}"
                why = f"the share on engine {engine.name} ended without its result: {tail}"
                result = Result(name, tiers[name], Status.FAILED, 0.0, reason=why)
            results[name] = replace(result, engine=_named(result.engine, engine.name))
    return again


def _named(said: str, engine: str) -> str:
    """The pool's name of an engine before what the share said of it."""
    return said if said.startswith(f"{engine} ") else f"{engine} ({said})" if said else engine
