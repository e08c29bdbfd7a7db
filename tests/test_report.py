from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pipeline.core.outcomes import ImageFacts, Result, Status
from pipeline.edges import report

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

RESULTS = [
    Result(
        "users",
        "backend",
        Status.OK,
        12.34,
        ImageFacts("sha256:" + "a" * 64, 62_500_000, ("sha256:1", "sha256:2")),
        {"unit": True, "smoke": True, "health": True},
    ),
    Result(
        "broken",
        "backend",
        Status.FAILED,
        3.0,
        None,
        {"unit": False},
        "unit: 1 failed, 3 passed\ncommand: pytest",
    ),
]


def test_table_shows_figures_and_the_failure_headline():
    text = report.table(RESULTS)
    assert "users" in text and "62.5 MB" in text and "sha256:aaaaaaaaaaaa" in text
    assert "unit: 1 failed, 3 passed" in text
    assert "command: pytest" not in text  # the detail stays in the JSON report
    assert text.splitlines()[-1] == "1 built, 1 failed"


def test_json_report_and_step_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "r" / "report.json"
    report.write_json(RESULTS, out, {"revision": "abc"})
    data = json.loads(out.read_text())
    assert data["revision"] == "abc"
    assert data["services"][0]["image"]["layers"] == ["sha256:1", "sha256:2"]
    assert data["services"][1]["reason"].startswith("unit: 1 failed")
    assert not list(out.parent.glob("*.tmp"))
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    report.write_step_summary(RESULTS)
    md = summary.read_text()
    assert "| users | backend | ok | 12.3s | 62.5 MB | unit ok, smoke ok, health ok |" in md
    assert "| broken | backend | failed: unit: 1 failed, 3 passed |" in md


def test_own_size_is_what_a_service_adds_to_its_tier():
    tier = ImageFacts("sha256:t", 60_000_000, ("sha256:1",))
    svc = Result(
        "gateway",
        "backend",
        Status.OK,
        1.0,
        ImageFacts("sha256:s", 60_800_000, ("sha256:1", "sha256:2")),
        tier_image=tier,
    )
    assert svc.own_size == 800_000
    text = report.table([svc])
    assert "0.8 MB" in text
    assert "tier images: backend 60.0 MB" in text


def test_sbom_document_is_valid_cyclonedx_and_complete():
    """Built in the run's own process (warnings are errors here, as in every test)."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from pipeline.core.stamp import Stamp
    from pipeline.supply import sbom

    stamp = Stamp("users", "backend", "0" * 40, "main", "2026-01-02T03:04:05Z", "", dirty=False)
    installed = {
        "python": [
            {"name": "Six", "version": "1.16.0", "expression": "", "license": "MIT",
             "classifiers": [], "record_sha256": "a" * 64},
            {"name": "odd", "version": "1", "expression": "Apache-2.0 OR MIT", "license": "",
             "classifiers": [], "record_sha256": ""},
        ],
        "debian": [{"name": "tini", "version": "0.19.0-1", "arch": "amd64"}],
    }  # fmt: skip
    text = sbom.document(stamp, "sha256:" + "b" * 64, installed)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    bom = json.loads(text)
    purls = sorted(c["purl"] for c in bom["components"])
    assert purls == [
        "pkg:deb/debian/tini@0.19.0-1?arch=amd64",
        "pkg:pypi/odd@1",
        "pkg:pypi/six@1.16.0",
    ]
    graph = {d["ref"]: d.get("dependsOn", []) for d in bom["dependencies"]}
    assert sorted(graph[bom["metadata"]["component"]["bom-ref"]]) == purls
    assert bom["metadata"]["timestamp"].startswith("2026-01-02T03:04:05")
    # the same image gives the same document
    assert sbom.document(stamp, "sha256:" + "b" * 64, installed) == text


def test_step_summary_holds_the_timeline_as_a_mermaid_gantt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    t0 = 1_700_000_000.0
    built = Result(
        "users",
        "backend",
        Status.OK,
        9.0,
        spans={"tier": (0.0, 2.0), "image": (2.0, 3.5), "unit": (0.5, 4.0)},
        started=t0 + 1.5,
        reused_checks=("smoke",),
    )
    replayed = Result("gateway", "backend", Status.OK, 0.0, cached=True)
    failed = Result(
        "broken", "backend", Status.FAILED, 3.0, spans={"unit": (0.25, 2.0)}, started=t0
    )
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    report.write_step_summary([built, replayed, failed])
    md = summary.read_text()
    chart = md[md.index("```mermaid\n") :]
    lines = chart.splitlines()
    assert lines[1] == "gantt"
    assert "    dateFormat x" in lines
    users = lines[lines.index("    section users") + 1 : lines.index("    section gateway")]
    # placed from the first build's start (broken's, t0), in ms, in the order they began
    assert users == [
        "    tier :1500, 3500",
        "    unit :2000, 6000",
        "    image :3500, 7000",
        "    smoke reused :done, milestone, 1500, 1500",
    ]
    gateway = lines[lines.index("    section gateway") + 1]
    assert gateway == "    replayed from the result cache :milestone, 0, 0"
    assert lines[lines.index("    section broken") + 1] == "    unit :crit, 250, 2250"
    assert lines[-1] == "```"
