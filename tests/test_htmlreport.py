"""The HTML build report, opened in a real browser (Debian's chromium, headless): every
service, the counts and a failure's reason are on the page as text; nothing on it is fetched
or run; it draws a timeline one can see; it holds 1 service and 200."""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipeline.core.outcomes import ImageFacts, Result, Status, Step
from pipeline.edges import htmlreport

RUN_START = 1_764_500_000.0
EVIL = "smoke failed: <script>document.title='pwned'</script> & exit 3"
ENGINE = "v0.21.8 at unix:///run/pipeline/buildkitd.sock"
MB = 1_000_000


def facts(*sizes: int, tag: str = "") -> ImageFacts:
    layers = tuple(f"sha256:{tag}{i:062x}" for i in range(len(sizes)))
    return ImageFacts(f"sha256:{tag}{sum(sizes):063x}", sum(sizes), layers, sizes)


def built(name: str, tier: str, at: float, **kw: object) -> Result:
    """A service built this run, ``at`` seconds after the run began, with all its steps."""
    tier_sizes = {"backend": (30 * MB, 12 * MB), "ai": (30 * MB, 12 * MB, 210 * MB)}[tier]
    spans = {
        Step.TIER.value: (0.0, 4.0),
        Step.IMAGE.value: (4.0, 9.5),
        Step.UNIT.value: (13.5, 3.2),
        Step.EXPORT.value: (13.5, 2.1),
        Step.SMOKE.value: (16.7, 1.4),
        Step.HEALTH.value: (18.1, 2.6),
        Step.SBOM.value: (20.7, 0.9),
    }
    result = Result(
        name,
        tier,
        Status.OK,
        22.0,
        image=facts(*tier_sizes, 3 * MB, 420_000, tag="a"),
        tier_image=facts(*tier_sizes, tag="a"),
        tests={"unit": True, "smoke": True, "health": True},
        started=RUN_START + at,
        spans=spans,
        changed=(f"services/{name}/app.py", "requirements/backend.txt"),
        engine=ENGINE,
    )
    return dataclasses.replace(result, **kw)  # type: ignore[arg-type]


def results() -> list[Result]:
    """Built, built with its checks reused, replayed, and two failures (one reason a script)."""
    return [
        built("users", "backend", 0.5),
        built(
            "gateway",
            "backend",
            1.0,
            tests={"unit": True, "smoke": True, "health": True},
            reused_checks=("unit", "smoke"),
            spans={
                "tier": (0.0, 4.1),
                "image": (4.1, 6.0),
                "health": (10.1, 2.0),
                "lint": (0.2, 1),
            },
        ),
        Result(
            "echo",
            "backend",
            Status.OK,
            0.02,
            image=facts(30 * MB, 12 * MB, 900_000, tag="b"),
            tier_image=facts(30 * MB, 12 * MB, tag="b"),
            tests={"unit": True, "smoke": True},
            cached=True,
            reused_checks=("unit", "smoke"),
        ),
        built(
            "inference",
            "ai",
            2.0,
            status=Status.FAILED,
            image=None,
            tests={"unit": True, "smoke": False},
            reason=EVIL,
            spans={"tier": (0.0, 40.0), "image": (40.0, 12.0), "smoke": (52.0, 3.0)},
        ),
    ]


RUN = {
    "command": "pipeline build --jobs 2 --tier '<all>'",
    "revision": "3f9c2d41e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3",
    "cache_scope": "main",
    "base_image": "python:3.11-slim-bookworm@sha256:" + "ab" * 32,
    "wall_time": 58.4,
    "started": RUN_START,
}


class Page(HTMLParser):
    """What a document holds: its elements by tag, and its text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.chunks: list[str] = []
        self.feed(text)
        self.text = " ".join(" ".join(self.chunks).split())
        self.nodes = {chunk.strip() for chunk in self.chunks}  # each text node on its own

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        message = "no chromium: apt-get install chromium (scripts/engine host-tools installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def browse(chromium: str, page: Path, tmp_path: Path, *flags: str) -> str:
    """Open ``page`` in headless chromium with ``flags``; its stdout."""
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium'}", *flags, page.as_uri()],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def written(tmp_path: Path, items: list[Result], run: dict[str, object] = RUN) -> Path:
    path = tmp_path / "report" / "build.html"
    htmlreport.write(items, path, run)
    return path


def test_the_page_shows_every_service_the_counts_and_an_escaped_reason(
    chromium: str, tmp_path: Path
):
    dumped = browse(chromium, written(tmp_path, results()), tmp_path, "--dump-dom")
    dom = Page(dumped)
    for name in ("users", "gateway", "echo", "inference"):
        assert name in dom.nodes
    assert "2 built" in dom.text
    assert "1 cached" in dom.text
    assert "1 failed" in dom.text
    assert "replayed from the result cache" in dom.text
    assert "reused: unit, smoke" in dom.text
    assert EVIL in dom.text  # the reason as text, in full ...
    assert "script" not in dom.tags  # ... never as an element, and nothing ran
    assert "<title>Build report 3f9c2d41e8b7</title>" in dumped  # the script would set it
    assert "<all>" in dom.text  # the command, escaped too
    assert "all" not in dom.tags
    assert ENGINE in dom.text
    assert "services/users/app.py" in dom.text


def test_the_page_fetches_nothing(chromium: str, tmp_path: Path):
    page = written(tmp_path, results())
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text
    assert "https://" not in text
    static = Page(text)
    assert not [a for a in static.attrs if a[0] in {"src", "href"}]
    assert "url(" not in text
    assert "@import" not in text
    # no name resolves: whatever the page needed from the net would be missing
    blind = "--host-resolver-rules=MAP * ~NOTFOUND"
    dom = Page(browse(chromium, page, tmp_path, blind, "--dump-dom"))
    for name in ("users", "gateway", "echo", "inference"):
        assert name in dom.nodes
    assert "2 built" in dom.text
    assert EVIL in dom.text


def pixels(png: bytes) -> list[bytes]:
    """The RGB(A) pixels of an 8-bit truecolour PNG (what chromium writes), row by row."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, data, header = 8, b"", b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        data += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8
    assert colour in {2, 6}
    size = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(data), width * size
    out: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        kind, row = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = row[i - size] if i >= size else 0
            b, c = prev[i], prev[i - size] if i >= size else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            predictor = [
                0,
                a,
                b,
                (a + b) // 2,
                a if pa <= pb and pa <= pc else b if pb <= pc else c,
            ]
            row[i] = (row[i] + predictor[kind]) & 0xFF
        out += [bytes(row[i : i + 3]) for i in range(0, stride, size)]
        prev = row
    return out


def test_the_page_draws_a_timeline_one_can_see(chromium: str, tmp_path: Path):
    shot = tmp_path / "report.png"
    page = written(tmp_path, results())
    browse(chromium, page, tmp_path, f"--screenshot={shot}", "--window-size=1400,1000")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 10_000
    seen = collections.Counter(pixels(png))
    assert len(seen) > 50  # text, bars, tables: not a blank page
    for step in ("tier", "image", "unit", "smoke", "health", "export", "sbom"):
        assert bytes.fromhex(htmlreport.STEP_COLOURS[step][1:]) in seen, step  # in the legend
    # the tier bars (48 s of the 58 s run, 12 px high) cover far more than a legend's swatch
    assert seen[bytes.fromhex(htmlreport.STEP_COLOURS["tier"][1:])] > 3000


@pytest.mark.parametrize("count", [1, 200])
def test_the_page_holds_one_service_and_two_hundred(chromium: str, tmp_path: Path, count: int):
    many = [
        built(f"svc-{i:03d}", "ai" if i % 3 else "backend", i * 0.4)
        if i % 7
        else Result(f"svc-{i:03d}", "backend", Status.OK, 0.01, cached=True)
        for i in range(count)
    ]
    dom = Page(browse(chromium, written(tmp_path, many), tmp_path, "--dump-dom"))
    names = {f"svc-{i:03d}" for i in range(count)}
    assert {w for w in dom.text.split() if w.startswith("svc-")} >= names
    assert f"of {count} service" in dom.text


def test_a_bar_starts_where_its_step_began_in_the_run():
    """A bar is placed at the service's start plus the step's start, after the run began
    (without ``started`` in the run: after the earliest service began)."""
    items = [built("users", "backend", 10.0), built("gateway", "backend", 4.0)]
    tips = Page(htmlreport.render(items, RUN)).text
    assert "users \u00b7 image: +14.0s, 9.5s" in tips  # 10 s in, and 4 s into its build
    assert "gateway \u00b7 sbom: +24.7s, 0.9s" in tips
    alone = Page(htmlreport.render(items, {k: v for k, v in RUN.items() if k != "started"})).text
    assert "gateway \u00b7 tier: +0.0s, 4.0s" in alone
    assert "users \u00b7 image: +10.0s, 9.5s" in alone


def test_the_page_is_the_same_for_the_same_run_and_written_whole(tmp_path: Path):
    page = written(tmp_path, results())
    assert page.read_text(encoding="utf-8") == htmlreport.render(results(), RUN)
    assert htmlreport.render(results(), RUN) == htmlreport.render(results(), dict(RUN))
    assert [p.name for p in page.parent.iterdir()] == ["build.html"]  # no temporary file left
    assert oct(page.stat().st_mode & 0o777) == "0o644"
