"""The build report as one page to open: a self-contained HTML file (inline CSS and SVG, no
script, nothing fetched) with the run's figures, a timeline of every service's steps, its
image's size (tier and own bytes) and why it rebuilt, on which engine."""

from __future__ import annotations

import datetime as dt
import html
import tempfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.outcomes import Step

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from pipeline.core.outcomes import Result

# Each step of the build in one colour, everywhere on the page; a step the enum does not name
# gets one of the others, picked by its name (stable from run to run).
STEP_COLOURS = {
    Step.TIER.value: "#a1887f",
    Step.IMAGE.value: "#1e88e5",
    Step.EXPORT.value: "#8e24aa",
    Step.SBOM.value: "#fb8c00",
    Step.UNIT.value: "#43a047",
    Step.SMOKE.value: "#9ccc65",
    Step.HEALTH.value: "#00897b",
}
OTHER_COLOURS = ("#5c6bc0", "#ec407a", "#26a69a", "#c0ca33", "#78909c", "#ffb300")
TIER_COLOUR, OWN_COLOUR = "#bcaaa4", "#1e88e5"
DASH = "\u2014"
KB, MB = 1e3, 1e6

# The timeline's geometry, in pixels: service names, the plot, then a column of notes.
LABEL_W, PLOT_W, NOTE_W = 170, 720, 300
NOTE_X = LABEL_W + PLOT_W + 16
WIDTH = NOTE_X + NOTE_W
AXIS_H, LANE_H, ROW_PAD = 26, 14, 5
NAME_CHARS, NOTE_CHARS = 24, 46

# No script may run and nothing may be fetched, even from text that escaped the escaping.
CSP = "default-src 'none'; style-src 'unsafe-inline'"

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;
margin:24px 32px;background:#fff}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:28px 0 10px;
border-bottom:1px solid #d0d7de;padding-bottom:4px}
dl.run{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0 0 12px}
dl.run dt{color:#59636e}dl.run dd{margin:0;font-family:ui-monospace,monospace;
overflow-wrap:anywhere}
.counts span{display:inline-block;padding:3px 10px;border-radius:12px;margin-right:6px;
font-weight:600}
.c-built{background:#dafbe1;color:#116329}.c-cached{background:#eaeef2;color:#424a53}
.c-failed{background:#ffebe9;color:#a40e26}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;margin:4px 0 8px;font-size:13px}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-1px;
margin-right:4px}
.sw.reused{border:1.5px dashed #57606a;width:10px;height:10px}
.sw.failed{background:#ffebe9;border:1px solid #c62828;width:10px;height:10px}
.scroll{overflow-x:auto}
svg text{font-family:system-ui,sans-serif;font-size:12px;fill:#1f2328}
svg .axis{fill:#59636e;font-size:11px}svg .grid{stroke:#d8dee4;stroke-width:1}
svg .bar-label{fill:#fff;font-size:10px}svg .failed{fill:#a40e26;font-weight:600}
svg .replayed{fill:#59636e;font-style:italic}svg .reused{fill:#424a53}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{font-size:12px;color:#59636e;font-weight:600}td.num{text-align:right;white-space:nowrap;
font-variant-numeric:tabular-nums}
.sizebar{display:flex;width:100%;min-width:200px;height:14px;background:#f6f8fa;
border-radius:3px;overflow:hidden}
.sizebar span{display:block;height:100%}
code{font-family:ui-monospace,monospace;font-size:12px;background:#f6f8fa;padding:0 3px;
border-radius:3px;overflow-wrap:anywhere}
ul.changed{margin:0;padding-left:16px}code.digest{white-space:nowrap}
.st-ok{color:#116329}.st-cached{color:#59636e}.st-failed{color:#a40e26;font-weight:600}
.chk-fail{color:#a40e26}.chk-reused{color:#59636e;font-style:italic}
pre.reason{background:#fff8f7;border:1px solid #ffcecb;padding:8px;white-space:pre-wrap;
overflow-wrap:anywhere;margin:4px 0 12px}
footer{margin-top:32px;color:#59636e;font-size:12px}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _mb(size: int) -> str:
    return f"{size / MB:.1f} MB" if abs(size) >= MB / 10 else f"{size / KB:.1f} kB"


def _secs(seconds: float) -> str:
    if seconds < 60:  # noqa: PLR2004 - a minute
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "\u2026"


def _colour(step: str) -> str:
    return STEP_COLOURS.get(step) or OTHER_COLOURS[zlib.crc32(step.encode()) % len(OTHER_COLOURS)]


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _counts(results: Sequence[Result]) -> dict[str, int]:
    labels = [r.label for r in results]
    return {
        "built": labels.count("ok"),
        "cached": labels.count("cached"),
        "failed": labels.count("failed"),
    }


def _run_start(results: Sequence[Result], run: Mapping[str, Any]) -> float:
    if run.get("started"):
        return float(run["started"])
    begun = [r.started for r in results if r.started]
    return min(begun) if begun else 0.0


def _offset(result: Result, run_start: float) -> float:
    """Where the service's build began, in seconds after the run's start."""
    return max(result.started - run_start, 0.0) if result.started else 0.0


def _lanes(spans: Iterable[tuple[str, float, float]]) -> list[tuple[str, float, float, int]]:
    """Each span with the first lane where it overlaps nothing (steps may run side by side)."""
    ends: list[float] = []
    placed = []
    for name, start, length in sorted(spans, key=lambda s: (s[1], s[0])):
        lane = next((i for i, end in enumerate(ends) if end <= start + 1e-9), len(ends))
        if lane == len(ends):
            ends.append(0.0)
        ends[lane] = start + length
        placed.append((name, start, length, lane))
    return placed


def _tick(total: float) -> float:
    """A round step for about eight ticks over ``total`` seconds (1, 2 or 5 times a power of 10)."""
    rough, unit = total / 8, 0.1
    while True:
        for mult in (1, 2, 5):
            if unit * mult >= rough:
                return unit * mult
        unit *= 10


def _steps_seen(results: Sequence[Result]) -> list[str]:
    names = {name for r in results for name in r.spans}
    known = [step.value for step in Step if step.value in names]
    others = sorted(names - set(known))
    return known + others


def _header(results: Sequence[Result], run: Mapping[str, Any], run_start: float) -> str:
    fields = [
        ("command", run.get("command")),
        ("revision", run.get("revision")),
        ("cache scope", run.get("cache_scope")),
        ("base image", run.get("base_image")),
        ("wall time", _secs(float(run["wall_time"])) if run.get("wall_time") is not None else None),
        ("started", dt.datetime.fromtimestamp(run_start, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
         if run_start else None),
    ]  # fmt: skip
    rows = "".join(
        f"<dt>{_e(name)}</dt><dd>{_e(value)}</dd>"
        for name, value in fields
        if value not in (None, "")
    )
    counts = "".join(
        f'<span class="c-{kind}">{n} {kind}</span>' for kind, n in _counts(results).items()
    )
    return (
        f'<h1>Build report</h1>\n<dl class="run">{rows}</dl>\n'
        f'<p class="counts">{counts} of {len(results)} service{"s" * (len(results) != 1)}</p>\n'
    )


def _legend(steps: Sequence[str]) -> str:
    swatches = [(f'class="sw" style="background:{_colour(s)}"', _e(s)) for s in steps] + [
        ('class="sw" style="background:#eaeef2"', "\u27f2 replayed from the result cache"),
        ('class="sw reused"', "\u21ba check reused (passed before on identical content)"),
        ('class="sw failed"', "\u2717 failed"),
    ]
    items = "".join(f"<span><i {swatch}></i>{text}</span>" for swatch, text in swatches)
    return f'<div class="legend">{items}</div>\n'


def _row(result: Result, y: int, height: int, origin: float, scale: float, index: int) -> str:
    """One service's row of the timeline: its bars, or the replay marker, and its notes."""
    failed = result.label == "failed"
    fill = "#ffebe9" if failed else "#f6f8fa" if index % 2 else "#ffffff"
    out = [f'<g class="row"><rect x="0" y="{y}" width="{WIDTH}" height="{height}" fill="{fill}"/>']
    mid = y + height / 2 + 4
    mark = "\u2717 " if failed else ""
    tip = f"{result.service} ({result.tier}): {result.label}, {_secs(result.duration)}"
    cls = ' class="failed"' if failed else ""
    out.append(
        f'<text x="6" y="{mid:.1f}"{cls}><title>{_e(tip)}</title>'
        f"{_e(mark + _clip(result.service, NAME_CHARS - len(mark)))}</text>"
    )
    if result.cached:
        out.append(
            f'<rect x="{LABEL_W}" y="{y + ROW_PAD}" width="{min(PLOT_W, 250)}" '
            f'height="{height - 2 * ROW_PAD}" rx="3" fill="#eaeef2"/>'
            f'<text class="replayed" x="{LABEL_W + 6}" y="{mid:.1f}">\u27f2 replayed from the '
            "result cache</text>"
        )
    for name, start, length, lane in _lanes((n, s, ln) for n, (s, ln) in result.spans.items()):
        x = LABEL_W + (origin + start) * scale
        width = max(length * scale, 1.5)
        top = y + ROW_PAD + lane * LANE_H
        title = f"{result.service} \u00b7 {name}: +{origin + start:.1f}s, {length:.1f}s"
        out.append(
            f'<rect x="{x:.1f}" y="{top}" width="{width:.1f}" height="{LANE_H - 2}" rx="2" '
            f'fill="{_colour(name)}"><title>{_e(title)}</title></rect>'
        )
        if width >= 7 * len(name) + 6:
            out.append(
                f'<text class="bar-label" x="{x + 3:.1f}" y="{top + LANE_H - 5}">{_e(name)}</text>'
            )
    if result.reused_checks and not result.cached:  # hollow boxes where the checks would be
        ends = [origin + start + length for start, length in result.spans.values()]
        x = LABEL_W + max(ends, default=origin) * scale + 6
        for check in result.reused_checks:
            width = 7 * len(check) + 18
            out.append(
                f'<rect x="{x:.1f}" y="{y + ROW_PAD}" width="{width}" height="{LANE_H - 2}" '
                f'rx="2" fill="none" stroke="{_colour(check)}" stroke-dasharray="3 2">'
                f"<title>{_e(check)}: reused, not run</title></rect>"
                f'<text class="reused" x="{x + 3:.1f}" y="{y + ROW_PAD + LANE_H - 5}" '
                f'font-size="10">\u21ba {_e(check)}</text>'
            )
            x += width + 4
    notes = []
    if result.reused_checks:
        reused = ", ".join(result.reused_checks)
        why = f"not run: {reused} passed before on an image of identical content"
        notes.append(("reused", f"\u21ba reused: {reused}", why))
    if failed:
        reason = _first_line(result.reason) or "failed"
        notes.append(("failed", f"\u2717 {reason}", result.reason or "failed"))
    for i, (cls, text, full) in enumerate(notes):
        ny = mid + (i - (len(notes) - 1) / 2) * 13
        out.append(
            f'<text class="{cls}" x="{NOTE_X}" y="{ny:.1f}"><title>{_e(full)}</title>'
            f"{_e(_clip(text, NOTE_CHARS))}</text>"
        )
    out.append("</g>")
    return "".join(out)


def _height(result: Result) -> int:
    """A row holds its lanes of bars and its notes (reused checks, the failure), one a line."""
    lanes = {lane for *_, lane in _lanes((n, s, ln) for n, (s, ln) in result.spans.items())}
    notes = bool(result.reused_checks) + (result.label == "failed")
    return max(len(lanes) * LANE_H, notes * 13, LANE_H) + 2 * ROW_PAD + 2


def _timeline(results: Sequence[Result], run: Mapping[str, Any], run_start: float) -> str:
    origins = [_offset(r, run_start) for r in results]
    ends = [o + s + ln for r, o in zip(results, origins, strict=True) for s, ln in r.spans.values()]
    total = max([float(run.get("wall_time") or 0.0), *ends, 1.0])
    scale = PLOT_W / total
    heights = [_height(r) for r in results]
    svg_h = AXIS_H + sum(heights) + 4
    step = _tick(total)
    parts = []
    for i in range(int(total / step + 1e-9) + 1):
        x = LABEL_W + i * step * scale
        parts.append(
            f'<line class="grid" x1="{x:.1f}" y1="{AXIS_H - 6}" x2="{x:.1f}" y2="{svg_h}"/>'
            f'<text class="axis" x="{x + 2:.1f}" y="{AXIS_H - 10}">{_e(_secs(i * step))}</text>'
        )
    y = AXIS_H
    rows = []
    for index, (result, origin, height) in enumerate(zip(results, origins, heights, strict=True)):
        rows.append(_row(result, y, height, origin, scale, index))
        y += height
    return (
        f'<div class="scroll"><svg width="{WIDTH}" height="{svg_h}" viewBox="0 0 {WIDTH} {svg_h}" '
        f'role="img" aria-label="timeline of {len(results)} services">'
        + "\n".join(rows)  # rows first: the grid lines are drawn over their backgrounds
        + "".join(parts)
        + "</svg></div>\n"
    )


def _sizes(results: Sequence[Result]) -> str:
    largest = max([r.image.size for r in results if r.image] + [1])
    rows = []
    for r in results:
        name = f"<td>{_e(r.service)}</td><td>{_e(r.tier)}</td>"
        if r.image is None:
            rows.append(f'<tr>{name}<td>\u2014</td><td class="num" colspan="4">no image</td></tr>')
            continue
        tier = r.tier_image.size if r.tier_image else 0
        own = r.image.size - tier
        layers = len(r.image.layers)
        ntier = len(r.tier_image.layers) if r.tier_image else 0
        tip = (
            "layers: " + ", ".join(_mb(s) for s in r.image.layer_sizes)
            if r.image.layer_sizes
            else ""
        )
        bar = (
            f'<div class="sizebar" title="{_e(tip)}">'
            f'<span style="width:{100 * tier / largest:.2f}%;background:{TIER_COLOUR}"></span>'
            f'<span style="width:{100 * max(own, 0) / largest:.2f}%;background:{OWN_COLOUR}">'
            "</span></div>"
        )
        split = f"{layers} ({ntier} tier + {layers - ntier} own)" if r.tier_image else str(layers)
        rows.append(
            f'<tr>{name}<td style="width:40%">{bar}</td>'
            f'<td class="num">{_e(_mb(tier)) if r.tier_image else DASH}</td>'
            f'<td class="num">{_e(_mb(own)) if r.tier_image else DASH}</td>'
            f'<td class="num">{_e(_mb(r.image.size))}</td><td class="num">{_e(split)}</td></tr>'
        )
    legend = (
        f'<div class="legend"><span><i class="sw" style="background:{TIER_COLOUR}"></i>tier '
        f'image bytes</span><span><i class="sw" style="background:{OWN_COLOUR}"></i>the '
        "service's own bytes</span><span>(compressed)</span></div>\n"
    )
    head = (
        "<tr><th>service</th><th>tier</th><th>size</th><th>tier</th><th>own</th><th>image</th>"
        "<th>layers</th></tr>"
    )
    return legend + f"<table>{head}\n" + "\n".join(rows) + "</table>\n"


def _checks(result: Result) -> str:
    names = list(result.tests) + [c for c in result.reused_checks if c not in result.tests]
    out = []
    for name in names:
        if name in result.reused_checks:
            out.append(f'<span class="chk-reused">\u21ba {_e(name)} (reused)</span>')
        elif result.tests[name]:
            out.append(f"<span>\u2713 {_e(name)}</span>")
        else:
            out.append(f'<span class="chk-fail">\u2717 {_e(name)}</span>')
    return ", ".join(out) or "\u2014"


def _why(result: Result) -> str:
    if result.cached:
        return "nothing changed: replayed from the result cache"
    if not result.changed:
        return "\u2014"
    items = [f"<li><code>{_e(c)}</code></li>" for c in result.changed]
    shown, rest = items[:8], items[8:]
    more = (
        f'<details><summary>{len(rest)} more</summary><ul class="changed">{"".join(rest)}</ul>'
        "</details>"
        if rest
        else ""
    )
    return f'<ul class="changed">{"".join(shown)}</ul>{more}'


def _rebuilds(results: Sequence[Result]) -> str:
    head = (
        "<tr><th>service</th><th>status</th><th>time</th><th>why it was built</th>"
        "<th>engine</th><th>checks</th><th>digest</th></tr>"
    )
    rows = []
    for r in results:
        engine = _e(r.engine) if r.engine else "\u2014"
        digest = (
            f'<code class="digest">{_e(r.image.digest[:19])}</code>'
            if r.image and r.ok
            else "\u2014"
        )
        rows.append(
            f'<tr><td>{_e(r.service)}</td><td class="st-{_e(r.label)}">{_e(r.label)}</td>'
            f'<td class="num">{_e(_secs(r.duration))}</td><td>{_why(r)}</td><td>{engine}</td>'
            f"<td>{_checks(r)}</td><td>{digest}</td></tr>"
        )
    return f"<table>{head}\n" + "\n".join(rows) + "</table>\n"


def _since(run: Mapping[str, Any]) -> str:
    """Each service's size and time against the last run of its scope and of main (the run's
    ``history``: edges/history.py's changes, as dicts)."""
    changes = [c for c in run.get("history") or () if isinstance(c, dict)]
    if not changes:
        return ""
    rows = []
    for c in changes:
        before, now = c.get("size_before"), c.get("size_now")
        delta = (
            f"{(now - before) / 1e6:+.2f} MB"
            if isinstance(before, int) and isinstance(now, int)
            else "\u2014"
        )
        grown = c.get("grown")
        share = f"{grown:+.1%}" if isinstance(grown, float) else ""
        rows.append(
            f"<tr><td>{_e(c.get('service'))}</td><td>{_e(c.get('against'))} "
            f"(<code>{_e(str(c.get('revision') or '')[:12])}</code>)</td>"
            f'<td class="num">{_e(delta)}</td><td class="num">{_e(share)}</td>'
            f'<td class="num">{_e(_secs(float(c.get("time_before") or 0)))} \u2192 '
            f"{_e(_secs(float(c.get('time_now') or 0)))}</td></tr>"
        )
    head = (
        "<tr><th>service</th><th>since the last run of</th><th>size</th><th>share</th>"
        "<th>time</th></tr>"
    )
    return f"<h2>Since the last run</h2>\n<table>{head}\n" + "\n".join(rows) + "</table>\n"


def _failures(results: Sequence[Result]) -> str:
    failed = [r for r in results if r.label == "failed"]
    if not failed:
        return ""
    items = "".join(
        f'<h3 class="st-failed">\u2717 {_e(r.service)}</h3><pre class="reason">'
        f"{_e(r.reason or 'failed (no reason given)')}</pre>"
        for r in failed
    )
    return f"<h2>Failures</h2>\n{items}\n"


def render(results: Sequence[Result], run: Mapping[str, Any]) -> str:
    """The whole page: the same text for the same results and run."""
    run_start = _run_start(results, run)
    revision = str(run.get("revision") or "")
    title = f"Build report {revision[:12]}".strip()
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style></head>\n<body>\n"
        + _header(results, run, run_start)
        + "<h2>Timeline</h2>\n"
        + _legend(_steps_seen(results))
        + _timeline(results, run, run_start)
        + "<h2>Image sizes</h2>\n"
        + _sizes(results)
        + "<h2>Why each service was built, and where</h2>\n"
        + _rebuilds(results)
        + _since(run)
        + _failures(results)
        + "<footer>pipeline build report</footer>\n</body></html>\n"
    )


def write(results: Sequence[Result], path: Path, run: Mapping[str, Any]) -> None:
    """The page, written whole under a unique name beside ``path``, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}-", delete=False, encoding="utf-8"
    ) as fh:
        fh.write(render(results, run))
    tmp = Path(fh.name)
    tmp.chmod(0o644)
    tmp.replace(path)
