"""How the pipeline's cost grows with the monorepo: `plan`, a warm no-change build and a
one-service edit on generated monorepos of N cheap services (issue #23, item 5).

For each N (``--sizes``, default 10 50 200) the script writes, in a temporary folder, a
committed git monorepo: the example's ``pipeline.toml`` and ``requirements/``, and N services
``services/svcNNN`` (a ``service.toml`` and a one-line ``main.py``; ``command`` sleeps, the
smoke test is ``python -c "import main"``, no unit tests, no port). The first ``--ai``
services (default 1) are on the ``ai`` tier (numpy and friends: one is enough to have the
tier in the graph), the others alternate between ``base`` and ``backend``.

Then, with the CLI as a user runs it (``python -m pipeline ... --project-dir REPO
--base-image $PIPELINE_BASE_IMAGE --cache-scope scale-<N>-<nonce>``, one command at a time):

1. ``plan``: median of ``--plan-runs`` (5);
2. a cold ``build`` of all N (once, it warms the result cache; its time is recorded too);
3. warm no-change ``build``: median of ``--warm-runs`` (3); every service must be replayed;
   then as many again with the scope's history full (``history.KEEP`` runs, as after that many
   builds of the scope: its lines are copies of the last, earlier in time);
4. a one-service edit: a line appended to one base service's ``main.py``, committed, then
   ``build``; median of ``--edit-runs`` (7), a new edit each time; only that service may be
   built, the N - 1 others must be replayed. The edits run once 1-3 are done for every N,
   one round at a time over the sizes (N = 10, 50, 200, then again), so each N's edits find
   the engine in the same state.

Each command starts on a quiet machine (``machine.settle``, as in peer.py). Every build
writes ``--report`` (JSON), which the script reads to check 3 and 4. Beside each wall time
(``time.monotonic()`` around the whole command) it records the CPU seconds of the CLI
process and its children (``resource.getrusage(RUSAGE_CHILDREN)``, user + system): the
engine's own work is in neither. It prints a markdown table with ratios against the smallest
N and the issue's targets (``plan`` <= 0.3 s and warm no-change <= 2 s at N = 200; a
one-service edit at N = 200 within 1.2x of N = 10), writes ``scale.json`` and ``scale.md``
to ``--out`` and draws ``docs/images/scale.png`` (needs matplotlib; skipped with a warning).

    eval "$(scripts/engine env)"
    .venv/bin/python benchmarks/scale.py                    # 10 50 200
    .venv/bin/python benchmarks/scale.py --sizes 10 50 --jobs 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import charts  # benchmarks/charts.py, beside this script
from machine import compiled, settle  # benchmarks/machine.py

from pipeline.edges import history
from pipeline.edges.resultcache import ResultCache

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "scale"
DEFAULT_CHART = ROOT / "docs" / "images" / "scale.png"
GIT_ID = ("-c", "user.name=bench", "-c", "user.email=bench@example.com")

# The targets: seconds at the largest N, and the edit's growth from the smallest N.
PLAN_TARGET_S = 0.3
WARM_TARGET_S = 2.0
EDIT_GROWTH_TARGET = 1.2
# how a report's `changed` names a rebuild caused by the commit alone (pipeline/core/jobs.py)
STAMP_REASON = "(stamp:"


@dataclass
class Timing:
    wall: float
    cpu: float


@dataclass
class SizeResult:
    n: int
    scope: str
    plan: list[Timing] = field(default_factory=list)
    cold: Timing | None = None
    warm: list[Timing] = field(default_factory=list)
    warm_history: list[Timing] = field(default_factory=list)  # with the history full
    edit: list[Timing] = field(default_factory=list)
    edit_built: list[list[str]] = field(default_factory=list)  # services built by each edit
    # of those, the ones built only because the stamp changed (commit, branch), not an input
    edit_stamp_only: list[list[str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class BenchError(RuntimeError):
    pass


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *GIT_ID, *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def service_names(n: int) -> list[str]:
    return [f"svc{i:03d}" for i in range(n)]


def tier_of(index: int, ai: int) -> str:
    if index < ai:
        return "ai"
    return ("base", "backend")[(index - ai) % 2]


def edited_service(n: int, ai: int) -> str:
    """The service every edit changes: the first base-tier one."""
    return next(name for i, name in enumerate(service_names(n)) if tier_of(i, ai) == "base")


def make_repo(dest: Path, n: int, ai: int) -> Path:
    """A committed monorepo of ``n`` cheap services over the example's tiers."""
    dest.mkdir(parents=True)
    shutil.copy2(ROOT / "pipeline.toml", dest / "pipeline.toml")
    shutil.copytree(ROOT / "requirements", dest / "requirements")
    for i, name in enumerate(service_names(n)):
        folder = dest / "services" / name
        folder.mkdir(parents=True)
        (folder / "service.toml").write_text(
            f'tier = "{tier_of(i, ai)}"\n'
            'command = ["python", "-c", "import main, time; time.sleep(3600)"]\n'
            'smoke = ["python", "-c", "import main"]\n'
        )
        (folder / "main.py").write_text(f"NAME = {name!r}\n")
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", f"{n} services")
    return dest


def run_cli(args: list[str]) -> tuple[Timing, subprocess.CompletedProcess[str]]:
    """``python -m pipeline ARGS``: its wall time and the CPU seconds of it and its children,
    started on a quiet machine (``settle``): a cold build of 200 services leaves the engine
    pruning its cache and the disk writing back for seconds, which the next command would
    otherwise be billed for."""
    settle()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise BenchError(f"`pipeline {' '.join(args[:1])}` exited {done.returncode}:\n{tail}")
    return Timing(wall, cpu), done


def report_services(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    services = data.get("services") if isinstance(data, dict) else data
    if not isinstance(services, list):
        raise BenchError(f"{path}: no list of services in the report")
    return [s for s in services if isinstance(s, dict)]


def built_services(path: Path, n: int) -> tuple[list[str], list[str]]:
    """The services a build built (not replayed), and of those the ones whose only change
    was the stamp (the commit or branch every image carries); every one must have passed."""
    services = report_services(path)
    failed = [s.get("service") for s in services if s.get("status") != "ok"]
    if failed:
        raise BenchError(f"services failed: {failed}")
    if len(services) != n:
        raise BenchError(f"the report lists {len(services)} services, not {n}")
    built = [s for s in services if not s.get("cached")]
    stamp_only = [
        s for s in built if all(str(c).startswith(STAMP_REASON) for c in s.get("changed", ()))
    ]
    return sorted(str(s["service"]) for s in built), sorted(str(s["service"]) for s in stamp_only)


@dataclass
class Size:
    """One generated monorepo and the build command every run of it uses."""

    result: SizeResult
    repo: Path
    report: Path
    build: list[str]


def prepare(n: int, args: argparse.Namespace, work: Path) -> Size:
    """The monorepo of ``n`` services, its ``plan`` runs, its cold build and its warm runs."""
    scope = f"scale-{n}-{uuid.uuid4().hex[:8]}"
    result = SizeResult(n, scope)
    repo = make_repo(work / f"n{n}", n, args.ai)
    common = ["--project-dir", str(repo), "--base-image", args.base_image, "--cache-scope", scope]
    report = work / f"n{n}-report.json"
    build = ["build", *common, "--jobs", str(args.jobs), "--report", str(report)]
    print(f"N={n}: plan x{args.plan_runs}", file=sys.stderr, flush=True)
    for _ in range(args.plan_runs):
        result.plan.append(run_cli(["plan", *common])[0])
    print(f"N={n}: cold build", file=sys.stderr, flush=True)
    result.cold, _ = run_cli(build)
    built_services(report, n)  # every service passed
    warm(result, build, report, args.warm_runs, result.warm, "")
    fill_history(repo, scope)
    warm(result, build, report, args.warm_runs, result.warm_history, ", history full")
    return Size(result, repo, report, build)


def warm(
    result: SizeResult, build: list[str], report: Path, runs: int, into: list[Timing], how: str
) -> None:
    """``runs`` warm no-change builds timed into ``into``; each must replay every service."""
    for i in range(runs):
        print(f"N={result.n}: warm no-change build {i + 1}{how}", file=sys.stderr, flush=True)
        timing, _ = run_cli(build)
        into.append(timing)
        built, _ = built_services(report, result.n)
        if built:
            result.problems.append(f"warm run {i + 1}{how} built {len(built)}: {built[:5]}")


def fill_history(repo: Path, scope: str) -> None:
    """The scope's history made full: ``history.KEEP`` lines, the last one's copies before it
    (each a minute earlier), as a scope that has built that many times has it."""
    path = ResultCache(repo, scope).dir / history.NAME
    lines = path.read_text().splitlines()
    last = json.loads(lines[-1])
    missing = history.KEEP - len(lines)
    copies = [
        json.dumps({**last, "at": last["at"] - 60 * k}, sort_keys=True)
        for k in range(missing, 0, -1)
    ]
    path.write_text("".join(f"{line}\n" for line in [*copies, *lines]))


def edit(size: Size, i: int, args: argparse.Namespace) -> None:
    """Edit ``i`` of one service of ``size``: a line appended and committed, then a build,
    which must build that service only."""
    result = size.result
    n, target = result.n, edited_service(result.n, args.ai)
    print(f"N={n}: edit of {target}, build {i + 1}", file=sys.stderr, flush=True)
    main = size.repo / "services" / target / "main.py"
    main.write_text(main.read_text() + f"EDIT_{i} = {uuid.uuid4().hex!r}\n")
    git(size.repo, "commit", "-qam", f"edit {i} of {target}")
    timing, _ = run_cli(size.build)
    result.edit.append(timing)
    built, stamp_only = built_services(size.report, n)
    result.edit_built.append(built)
    result.edit_stamp_only.append(stamp_only)
    if built != [target]:
        result.problems.append(
            f"edit {i + 1} built {len(built)} services, not only {target}: "
            f"{len(stamp_only)} of them only for the stamp (commit)"
        )


def median_wall(timings: list[Timing]) -> float:
    """The median wall time; NaN (printed "nan") for a step an interrupted run never reached."""
    return statistics.median(t.wall for t in timings) if timings else math.nan


def median_cpu(timings: list[Timing]) -> float:
    return statistics.median(t.cpu for t in timings) if timings else math.nan


def table(results: list[SizeResult]) -> str:
    first = results[0]
    base = f"N={first.n}"
    rows = [
        (
            "| N | plan | plan CPU | cold build | cold CPU | warm no-change | warm CPU "
            "| warm, history full "
            f"| one-service edit | edit CPU | built per edit | plan / {base} | warm / {base} "
            f"| edit / {base} |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cold = f"{r.cold.wall:.2f} s" if r.cold else "-"
        cold_cpu = f"{r.cold.cpu:.2f} s" if r.cold else "-"
        full = f"{median_wall(r.warm_history):.2f} s" if r.warm_history else "-"
        built = f"{statistics.median(len(b) for b in r.edit_built):g}" if r.edit_built else "-"
        rows.append(
            f"| {r.n} | {median_wall(r.plan):.2f} s | {median_cpu(r.plan):.2f} s | {cold} "
            f"| {cold_cpu} | {median_wall(r.warm):.2f} s | {median_cpu(r.warm):.2f} s "
            f"| {full} "
            f"| {median_wall(r.edit):.2f} s | {median_cpu(r.edit):.2f} s "
            f"| {built} "
            f"| {median_wall(r.plan) / median_wall(first.plan):.2f}x "
            f"| {median_wall(r.warm) / median_wall(first.warm):.2f}x "
            f"| {median_wall(r.edit) / median_wall(first.edit):.2f}x |"
        )
    return "\n".join(rows)


def verdicts(results: list[SizeResult]) -> list[str]:
    first, last = results[0], results[-1]
    plan, warm = median_wall(last.plan), median_wall(last.warm)
    growth = median_wall(last.edit) / median_wall(first.edit)

    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    plan_ok, warm_ok = mark(plan <= PLAN_TARGET_S), mark(warm <= WARM_TARGET_S)
    edit_ok = mark(growth <= EDIT_GROWTH_TARGET)
    full: list[str] = []
    if last.warm_history:
        warm_full = median_wall(last.warm_history)
        full_ok = mark(warm_full <= WARM_TARGET_S)
        full.append(
            f"- warm no-change at N={last.n}, history full: {warm_full:.2f} s "
            f"(target <= {WARM_TARGET_S} s): {full_ok}"
        )
    return [
        f"- plan at N={last.n}: {plan:.2f} s (target <= {PLAN_TARGET_S} s): {plan_ok}",
        f"- warm no-change at N={last.n}: {warm:.2f} s (target <= {WARM_TARGET_S} s): {warm_ok}",
        *full,
        (
            f"- one-service edit at N={last.n} / N={first.n}: {growth:.2f}x "
            f"(target <= {EDIT_GROWTH_TARGET}x): {edit_ok}"
        ),
    ]


def chart(results: list[SizeResult], path: Path) -> None:
    plt = charts.pyplot()
    if plt is None:
        return
    sizes = [r.n for r in results]
    first, last = results[0], results[-1]
    panels = [
        ("plan", [r.plan for r in results], PLAN_TARGET_S, f"target at N={last.n}"),
        (
            "warm no-change build",
            [r.warm for r in results],
            WARM_TARGET_S,
            f"target at N={last.n}",
        ),
        (
            "one-service edit (commit, build)",
            [r.edit for r in results],
            EDIT_GROWTH_TARGET * median_wall(first.edit),
            f"target at N={last.n}: {EDIT_GROWTH_TARGET}x N={first.n}",
        ),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (title, timings, target, label) in zip(axes, panels, strict=True):
        ax.plot(sizes, [median_wall(t) for t in timings], "o-", label="wall (median)")
        ax.plot(sizes, [median_cpu(t) for t in timings], "s--", label="CLI CPU (median)")
        if title.startswith("warm") and all(r.warm_history for r in results):
            full = [median_wall(r.warm_history) for r in results]
            ax.plot(sizes, full, "^-", label=f"wall, history full ({history.KEEP} runs)")
        for n, runs in zip(sizes, timings, strict=True):
            ax.scatter([n] * len(runs), [t.wall for t in runs], s=10, color="grey", zorder=3)
        ax.axhline(target, color="red", linestyle=":", label=label)
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.set_xlabel("services (N)")
        ax.set_ylabel("seconds")
        # a lone outlier (a run that rebuilt everything) would flatten the medians: it is
        # written on the panel instead of drawn
        top = 1.6 * max(target, *(max(t.wall for t in runs) for runs in timings if runs))
        cap = 1.6 * max(target, *(median_wall(runs) for runs in timings))
        if top > 3 * cap:
            far = [
                f"{t.wall:.0f} s (N={n})"
                for n, runs in zip(sizes, timings, strict=True)
                for t in runs
                if t.wall > cap
            ]
            ax.set_ylim(0, cap)
            ax.text(
                0.02,
                0.95,
                "off the chart: " + ", ".join(far),
                transform=ax.transAxes,
                fontsize=7,
                va="top",
            )
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("pipeline cost as the monorepo grows (issue #23, item 5)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"chart: {path}", file=sys.stderr)


def engine_facts() -> dict[str, str]:
    facts = {
        "python": platform.python_version(),
        "runner": os.environ.get("_EXPERIMENTAL_DAGGER_RUNNER_HOST", ""),
        "cli": os.environ.get("_EXPERIMENTAL_DAGGER_CLI_BIN", ""),
    }
    try:
        from importlib.metadata import version

        facts["dagger-io"] = version("dagger-io")
    except ImportError:  # pragma: no cover - importlib.metadata is stdlib
        pass
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    facts["commit"] = done.stdout.strip()
    return facts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="plan, warm no-change build and a one-service edit on generated monorepos "
        "of N services (issue #23, item 5)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200], metavar="N")
    parser.add_argument("--plan-runs", type=int, default=5)
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--edit-runs", type=int, default=7)
    parser.add_argument("--ai", type=int, default=1, help="services on the heavy ai tier")
    parser.add_argument("--jobs", type=int, default=2, help="the pipeline's --jobs")
    parser.add_argument(
        "--base-image",
        default=os.environ.get("PIPELINE_BASE_IMAGE", ""),
        help="the pipeline's --base-image (env PIPELINE_BASE_IMAGE)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="scale.json, scale.md")
    parser.add_argument("--chart", type=Path, default=DEFAULT_CHART)
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the generated monorepos")
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        metavar="JSON",
        help="measure nothing: the table and chart of an earlier run's scale.json",
    )
    args = parser.parse_args(argv)
    if args.source is not None:
        return args
    if not args.base_image:
        parser.error('no base image: pass --base-image or eval "$(scripts/engine env)"')
    if min(args.sizes) < 2 or min(args.plan_runs, args.warm_runs, args.edit_runs) < 1:  # noqa: PLR2004
        parser.error("every size must be at least 2 and every run count at least 1")
    if not 0 <= args.ai < min(args.sizes):
        parser.error("--ai must leave at least one base service in every size")
    if not os.environ.get("_EXPERIMENTAL_DAGGER_RUNNER_HOST") and not shutil.which("dagger"):
        parser.error('no engine: eval "$(scripts/engine env)" first')
    args.sizes = sorted(set(args.sizes))
    return args


def load_results(path: Path) -> tuple[str, list[SizeResult]]:
    """The heading and results of an earlier run's scale.json."""
    data = json.loads(path.read_text())
    results = []
    for item in data["results"]:

        def runs(key: str, item: dict[str, Any] = item) -> list[Timing]:
            return [Timing(**t) for t in item[key]]

        results.append(
            SizeResult(
                n=int(item["n"]),
                scope=str(item["scope"]),
                plan=runs("plan"),
                cold=Timing(**item["cold"]) if item["cold"] else None,
                warm=runs("warm"),
                warm_history=runs("warm_history") if "warm_history" in item else [],
                edit=runs("edit"),
                edit_built=item["edit_built"],
                edit_stamp_only=item.get("edit_stamp_only", []),
                problems=item["problems"],
            )
        )
    facts = data["facts"]
    head = data.get("head") or (
        f"dagger-io {facts.get('dagger-io', '?')}, commit {facts['commit']}, --jobs {data['jobs']}"
    )
    return head, results


def write(head: str, results: list[SizeResult], args: argparse.Namespace) -> str:
    """The table and the verdicts, printed and written to --out; the chart."""
    text = "\n".join([head, "", table(results), "", *verdicts(results)])
    for r in results:
        text += "".join(f"\n- N={r.n}: {p}" for p in r.problems)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.md").write_text(text + "\n")
    if not args.no_chart:
        chart(results, args.chart)
    return text


def save(results: list[SizeResult], args: argparse.Namespace, start_load: float) -> str:
    """scale.json in --out, with what was measured so far; its heading."""
    facts = engine_facts()
    head = (
        f"dagger-io {facts.get('dagger-io', '?')}, commit {facts['commit']}, --jobs {args.jobs}, "
        f"{args.ai} ai service(s), 1-minute load average {start_load:.1f} at the start and "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    data = {
        "head": head,
        "facts": facts,
        "jobs": args.jobs,
        "ai": args.ai,
        "results": [asdict(r) for r in results],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(data, indent=2) + "\n")
    return head


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.source is not None:
        write(*load_results(args.source), args)
        return 0
    compiled(ROOT / "pipeline")
    start_load = os.getloadavg()[0]
    results: list[SizeResult] = []
    work = Path(tempfile.mkdtemp(prefix="pipeline-scale-"))
    sizes: list[Size] = []
    complete = True
    try:
        for n in args.sizes:
            sizes.append(prepare(n, args, work))
            results.append(sizes[-1].result)
            save(results, args, start_load)  # as it goes: an interrupted run keeps it
        # The edits of every size in turn, round after round: each size's edits then find the
        # engine as full as the others' (after every cold build), not only the last size's
        # edits right after the largest cold build.
        for i in range(args.edit_runs):
            for size in sizes:
                edit(size, i, args)
            save(results, args, start_load)
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f"scale: {exc}", file=sys.stderr)
        complete = False
    finally:
        if args.keep:
            print(f"monorepos kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if not results:
        return 1
    write(save(results, args, start_load), results, args)
    failed = not complete or len(results) < len(args.sizes) or any(r.problems for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
