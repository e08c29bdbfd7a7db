"""Each run's figures, kept per cache scope: what every service's image weighed and took, run
after run, so a run can say what changed since the last run of its scope and of main.

``<project>/.pipeline/cache/<scope>/history.jsonl``: one JSON line per run (when, revision,
command, and per service its digest, compressed size, time and status), oldest first, at most
``KEEP`` runs (the oldest go first). It sits in the scope's result cache folder, so `cache
export` carries it to the next CI runner with the results. A line that does not read is
skipped with a warning; every write replaces the file whole.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.log import get_logger
from pipeline.edges.resultcache import ResultCache

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pipeline.core.outcomes import Result

NAME = "history.jsonl"
KEEP = 200  # runs per scope: about 60 kB for the example's 7 services
MB = 1e6
_START = '{"at": '  # how every line starts: json.dumps with sorted keys


@dataclass(frozen=True)
class Figures:
    """One service's figures in one run."""

    status: str  # ok, cached or failed
    size: int | None  # compressed bytes of the image
    duration: float
    digest: str | None


@dataclass(frozen=True)
class Run:
    at: float  # epoch seconds
    revision: str
    command: str
    services: dict[str, Figures] = field(default_factory=dict)

    @classmethod
    def of(cls, results: Sequence[Result], at: float, revision: str, command: str) -> Run:
        figures = {
            r.service: Figures(
                r.label,
                r.image.size if r.image else None,
                round(r.duration, 2),
                r.image.digest if r.image else None,
            )
            for r in results
        }
        return cls(round(at, 3), revision, command, figures)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        services = {
            str(name): Figures(
                str(f["status"]),
                None if f.get("size") is None else int(f["size"]),
                float(f["duration"]),
                None if f.get("digest") is None else str(f["digest"]),
            )
            for name, f in data["services"].items()
        }
        return cls(float(data["at"]), str(data["revision"]), str(data["command"]), services)

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%d %H:%M")


def _path(root: Path, scope: str) -> Path:
    return ResultCache(root, scope).dir / NAME


def _lines(root: Path, scope: str) -> tuple[Path, list[str]]:
    """The history file of ``scope`` and its lines; none when it has no history yet."""
    path = _path(root, scope)
    try:
        return path, path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return path, []
    except OSError as exc:
        get_logger().warning("history_unreadable", path=str(path), reason=str(exc))
        return path, []


def _parsed(path: Path, number: int, line: str) -> Run | None:
    """The run on line ``number`` of ``path``, or None (with a warning) when it does not read."""
    try:
        return Run.from_dict(json.loads(line))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        get_logger().warning("history_line_skipped", path=str(path), line=number, reason=str(exc))
        return None


def read(root: Path, scope: str) -> list[Run]:
    """The scope's runs, oldest first; none when it has no history yet."""
    path, lines = _lines(root, scope)
    runs = (_parsed(path, number, line) for number, line in enumerate(lines, start=1))
    return [run for run in runs if run is not None]


def last(root: Path, scope: str) -> Run | None:
    """The scope's latest run that reads, or None. Lines are parsed from the end, so a run's
    comparison with the last one parses one line however long the history is."""
    path, lines = _lines(root, scope)
    for number in range(len(lines), 0, -1):
        if (run := _parsed(path, number, lines[number - 1])) is not None:
            return run
    return None


def window_start(root: Path, scope: str) -> float | None:
    """When the oldest run the scope's history keeps started, once it keeps ``KEEP`` runs:
    a result cache entry no run has used since then is of none of them (carry.py leaves it
    out of an export). None while the history is not full: nothing is old yet."""
    path, lines = _lines(root, scope)
    runs = _runs(lines)
    if len(runs) < KEEP:
        return None
    number, line = runs[-KEEP]
    oldest = _parsed(path, number, line)
    return oldest.at if oldest is not None else None


def _runs(lines: list[str]) -> list[tuple[int, str]]:
    """The lines (with their numbers) of the shape ``append`` writes: one JSON object whose
    first key is ``at`` (keys are sorted). A line cut short or written by hand goes at the next
    append without parsing every line; one damaged inside is skipped, with a warning, when
    read."""
    return [
        (number, line)
        for number, line in enumerate(lines, start=1)
        if line.startswith(_START) and line.endswith("}")
    ]


def append(root: Path, scope: str, run: Run) -> None:
    """Add ``run`` to the scope's history, keeping the last ``KEEP`` runs; written whole. The
    earlier runs' lines are kept as they are, not parsed into runs and written again: with 200
    services and a full history that took 0.4 s of every run, and it dropped the fields a later
    version of the pipeline writes."""
    path, lines = _lines(root, scope)
    kept = [line for _, line in _runs(lines)][-(KEEP - 1) :] if KEEP > 1 else []
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(line + "\n" for line in [*kept, json.dumps(asdict(run), sort_keys=True)])
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{NAME}-", delete=False, encoding="utf-8"
    ) as fh:
        fh.write(text)
    Path(fh.name).chmod(0o644)
    Path(fh.name).replace(path)


@dataclass(frozen=True)
class Change:
    """A service's figures now against an earlier run's."""

    service: str
    against: str  # "this scope" or "main"
    revision: str
    size_before: int | None
    size_now: int | None
    time_before: float
    time_now: float

    @property
    def grown(self) -> float | None:
        """The image's growth as a share of its earlier size (None when either is unknown)."""
        if not self.size_before or self.size_now is None:
            return None
        return (self.size_now - self.size_before) / self.size_before

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "grown": self.grown}

    def warning(self) -> str:
        growth = self.grown or 0.0
        delta = ((self.size_now or 0) - (self.size_before or 0)) / MB
        return (
            f"{self.service} grew {delta:.1f} MB (+{growth:.0%}) since the last run of "
            f"{self.against} ({self.revision[:12]})"
        )


def changes(now: Run, before: Run | None, against: str) -> list[Change]:
    """Each service's change against the earlier run, for the services both have figures of."""
    if before is None:
        return []
    return [
        Change(name, against, before.revision, was.size, fig.size, was.duration, fig.duration)
        for name, fig in now.services.items()
        if (was := before.services.get(name)) is not None and fig.status != "failed"
    ]


def series(runs: Sequence[Run], service: str) -> str:
    """``pipeline history SERVICE``: the service's figures, run by run, oldest first."""
    rows = [("WHEN (UTC)", "REVISION", "COMMAND", "STATUS", "SIZE", "CHANGE", "TIME", "DIGEST")]
    previous: int | None = None
    for run in runs:
        fig = run.services.get(service)
        if fig is None:
            continue
        size = f"{fig.size / MB:.1f} MB" if fig.size is not None else "-"
        change = (
            f"{(fig.size - previous) / MB:+.1f} MB"
            if fig.size is not None and previous is not None
            else ""
        )
        previous = fig.size if fig.size is not None else previous
        rows.append(
            (
                run.when,
                run.revision[:12],
                run.command,
                fig.status,
                size,
                change,
                f"{fig.duration:.1f}s",
                (fig.digest or "")[:19],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )
