"""The ways a run's results are shown: the table, Markdown for a CI step summary, JSON, and
one canonical log line per service."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.log import get_logger

if TYPE_CHECKING:
    from pipeline.core.outcomes import Result

KB, MB = 1e3, 1e6


def _mb(size: int) -> str:
    return f"{size / MB:.1f} MB" if abs(size) >= MB / 10 else f"{size / KB:.1f} kB"


def table(results: list[Result]) -> str:
    rows = [("SERVICE", "TIER", "STATUS", "TIME", "SIZE", "OWN", "LAYERS", "DIGEST / REASON")]
    for r in results:
        img = r.image
        rows.append(
            (
                r.service,
                r.tier,
                r.label,
                f"{r.duration:.1f}s",
                _mb(img.size) if img else "-",
                _mb(r.own_size) if r.own_size is not None else "-",
                str(len(img.layers)) if img else "-",
                (img.digest[:19] if img and r.ok else r.reason.splitlines()[0] if r.reason else ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    ]
    tiers = {r.tier: r.tier_image for r in results if r.tier_image is not None}
    if tiers:
        lines.append("tier images: " + ", ".join(f"{t} {_mb(f.size)}" for t, f in tiers.items()))
    failed = sum(not r.ok for r in results)
    cached = sum(r.cached and r.ok for r in results)
    replayed = f" ({cached} from the result cache)" if cached else ""
    lines.append(f"{len(results) - failed} built{replayed}, {failed} failed")
    return "\n".join(lines)


def markdown(results: list[Result]) -> str:
    lines = ["| service | tier | status | time | size | tests |", "|---|---|---|---|---|---|"]
    for r in results:
        tests = ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in r.tests.items()) or "-"
        size = _mb(r.image.size) if r.image else "-"
        status = r.label if r.ok else f"failed: {r.reason.splitlines()[0] if r.reason else ''}"
        lines.append(
            f"| {r.service} | {r.tier} | {status} | {r.duration:.1f}s | {size} | {tests} |"
        )
    return "\n".join(lines) + "\n"


def gantt(results: list[Result]) -> str:
    """The run's timeline as a Mermaid Gantt chart (GitHub renders it in a step summary): one
    section per service, a task per timed step, placed in milliseconds from the first build's
    start; a replayed service is one milestone, a failed one's steps are marked critical."""
    starts = [r.started for r in results if r.started]
    origin = min(starts, default=0.0)
    lines = [
        "```mermaid",
        "gantt",
        "    title Build timeline (min:s from the first build's start)",
        "    dateFormat x",
        "    axisFormat %M:%S",
    ]
    for r in results:
        lines.append(f"    section {_mermaid_text(r.service)}")
        if r.cached or not r.spans:
            what = "replayed from the result cache" if r.cached else r.label
            lines.append(f"    {what} :milestone, 0, 0")
            continue
        tag = "crit, " if not r.ok else ""
        for step, (start, length) in sorted(r.spans.items(), key=lambda kv: kv[1][0]):
            begin = round((r.started + start - origin) * 1000)
            end = begin + max(1, round(length * 1000))
            lines.append(f"    {_mermaid_text(step)} :{tag}{begin}, {end}")
        began = round((r.started - origin) * 1000)  # a reused check: a mark where it began
        lines.extend(
            f"    {_mermaid_text(c)} reused :done, milestone, {began}, {began}"
            for c in r.reused_checks
        )
    lines.append("```")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    """A name as Mermaid's Gantt syntax takes it: no colon, hash or line break."""
    return " ".join(text.replace(":", " ").replace("#", " ").replace(";", " ").split())


def write_json(results: list[Result], path: Path, extra: dict[str, Any]) -> None:
    """The report, written whole under a unique name beside ``path``, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({**extra, "services": [r.as_dict() for r in results]}, indent=2) + "\n"
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}-", delete=False, encoding="utf-8"
    ) as fh:
        fh.write(text)
    tmp = Path(fh.name)
    tmp.chmod(0o644)
    tmp.replace(path)


def write_step_summary(results: list[Result]) -> None:
    """Append the Markdown table to the GitHub Actions step summary when there is one."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with Path(target).open("a", encoding="utf-8") as fh:
            fh.write("### Images\n\n" + markdown(results) + "\n" + gantt(results))


def log_line(result: Result) -> None:
    """One canonical line per service, with all its figures."""

    facts = result.image
    figures = {
        "service": result.service,
        "tier": result.tier,
        "status": result.label,
        "duration": round(result.duration, 2),
        "digest": facts.digest if facts else None,
        "size": facts.size if facts else None,
        "layers": len(facts.layers) if facts else None,
        "tests": result.tests,
        "reused_checks": list(result.reused_checks),
        "steps": result.steps,
    }
    if result.engine:
        figures["engine"] = result.engine
    if result.ok:
        get_logger().info("service_built", **figures, published=list(result.published))
    else:
        get_logger().error("service_failed", **figures, reason=result.reason)
