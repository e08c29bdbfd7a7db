"""Placement on an engine pool, simulated: which engine builds a service, and how warm its
tier layers are there, for rendezvous hashing on the leaf tier and for what a pool does
without it.

    python benchmarks/placement_sim.py [--commits 500] [--engines 1 5 20] [--seed 21]
        [--histories 5] [--chart docs/images/placement.png | --no-chart]

No engine is involved: a model monorepo of 200 services over 10 tiers (the tiers' sizes and
build times are in TIERS), a seeded history of commits (each changes one service, or, now and
then, a tier and so every tier and service below it), and a pool of 1, 5 or 20 engines at
the start, which one engine joins, then one leaves, twice over. Each engine keeps a cache of
the tier images it has built. A service that a commit changes is built on the engine its
strategy picks; each tier of its chain (root to leaf) is either warm there (a hit) or built
(or pulled) there, which costs its bytes and, built, its seconds. Unchanged services cost
nothing: the result cache replays them, whichever strategy placed them.

Strategies: `rendezvous` (pipeline.core.placement on the service's leaf tier: what the
pipeline does) and what a pool gives without it: `sticky-service` (the same hashing on the
service's name: buildx's `loadbalance=sticky` hashes the build context's path, one per service
when each service is built from its folder), and, choosing per build, `round-robin` (one
counter across builds, a load balancer's default), `least-loaded` (the engine with the fewest
builds of this commit so far, ties drawn at random) and `random` (buildx's
`loadbalance=random`, a Kubernetes Service).

Measured, summed over several histories (seeds): the tier hit rate, tier builds, GB built (or
pulled) and engine seconds per change, on how many engines each tier version was built, the
busiest engine's seconds per change (engines build one thing at a time), and the bytes a join
and a leave move: what building every service once right after it would build (or pull), less
what the same would from the pool without it. Printed: a Markdown table per strategy and pool
size, then ours against the best of the others on each measure; the chart needs matplotlib
(the `bench` dependency group). Deterministic for its seeds; runs in seconds. See
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import charts  # benchmarks/charts.py, beside this script

if TYPE_CHECKING:
    from collections.abc import Sequence

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "docs" / "images" / "placement.png"
MB = 1_000_000
SERVICE_SECONDS = 20.0  # a changed service's own layers and checks: the same under every strategy
TIER_CHANGE_SHARE = 0.08  # commits that change a tier (its pins, its apt packages) not a service
MIN_COMMITS = 10  # the four joins and leaves at distinct commits


@dataclass(frozen=True)
class Tier:
    name: str
    parent: str | None
    mb: int  # the tier image's own layers
    seconds: float  # to build them on a warm parent
    services: int  # services whose leaf tier this is


TIERS = (
    Tier("base", None, 150, 40, 10),  # interpreter, uv, build tools
    Tier("web", "base", 60, 25, 30),
    Tier("cli", "base", 40, 15, 15),
    Tier("backend", "base", 180, 60, 30),
    Tier("worker", "backend", 90, 30, 30),
    Tier("data", "backend", 250, 90, 25),
    Tier("geo", "data", 300, 120, 10),
    Tier("ml", "data", 900, 240, 15),
    Tier("ai", "ml", 2500, 600, 20),  # torch and CUDA wheels
    Tier("llm", "ai", 1800, 420, 15),
)
BY_NAME = {tier.name: tier for tier in TIERS}


def chain(tier: str) -> tuple[str, ...]:
    """The tiers from the root down to ``tier``."""
    out: list[str] = []
    name: str | None = tier
    while name is not None:
        out.append(name)
        name = BY_NAME[name].parent
    return tuple(reversed(out))


CHAINS = {tier.name: chain(tier.name) for tier in TIERS}
SERVICES = {
    f"{tier.name}-{i:02d}": tier.name for tier in TIERS for i in range(1, tier.services + 1)
}


@dataclass(frozen=True)
class Commit:
    index: int
    changed: str  # a service, or a tier when ``tier`` is set
    tier: bool = False

    def affected(self) -> list[str]:
        if not self.tier:
            return [self.changed]
        return sorted(s for s, leaf in SERVICES.items() if self.changed in CHAINS[leaf])


@dataclass(frozen=True)
class Event:
    at: int  # before this commit
    join: bool
    engine: str


def history(commits: int, seed: int) -> list[Commit]:
    rng = random.Random(seed)  # noqa: S311 - a reproducible history, not a secret
    services, tiers = sorted(SERVICES), [tier.name for tier in TIERS]
    return [
        Commit(i, rng.choice(tiers), tier=True)
        if rng.random() < TIER_CHANGE_SHARE
        else Commit(i, rng.choice(services))
        for i in range(commits)
    ]


def engine_names(engines: int, seed: int) -> list[str]:
    """The pool's first ``engines`` names: each history its own (hashing sees other names)."""
    return [f"engine-{seed}-{i}" for i in range(1, engines + 1)]


def events(engines: int, commits: int, seed: int) -> list[Event]:
    """An engine joins at 1/5 of the history, one leaves at 2/5, again at 3/5 and 4/5."""
    rng = random.Random(f"{seed}-{engines}")  # noqa: S311 - which engine leaves, reproducibly
    pool = engine_names(engines, seed)
    out: list[Event] = []
    for step in range(1, 5):
        at = commits * step // 5
        if step % 2:
            name = engine_names(engines + (step + 1) // 2, seed)[-1]
            pool.append(name)
            out.append(Event(at, join=True, engine=name))
        else:
            name = rng.choice(pool)
            pool.remove(name)
            out.append(Event(at, join=False, engine=name))
    return out


def _draw(*parts: object) -> int:
    """A number from the parts, the same on every run (a seeded choice per build)."""
    text = "\0".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@dataclass
class Strategy:
    name: str
    counter: int = 0  # round-robin's, shared by every build
    ring: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)

    def pick(
        self, service: str, leaf: str, pool: Sequence[str], build: str, load: dict[str, int]
    ) -> str:
        if self.name == "rendezvous":
            return self._rendezvous(leaf, pool)
        if self.name == "sticky-service":
            return self._rendezvous(service, pool)
        if self.name == "round-robin":
            self.counter += 1
            return pool[(self.counter - 1) % len(pool)]
        if self.name == "least-loaded":
            return min(pool, key=lambda e: (load.get(e, 0), _draw(build, e)))
        return pool[_draw(build) % len(pool)]

    def _rendezvous(self, key: str, pool: Sequence[str]) -> str:
        found = self.ring.get((key, tuple(pool)))
        if found is None:
            from pipeline.core.placement import Engine, order

            engines = [Engine(name, f"tcp://{name}:12341") for name in pool]
            found = self.ring[key, tuple(pool)] = order(key, engines)[0].name
        return found


STRATEGIES = ("rendezvous", "sticky-service", "round-robin", "least-loaded", "random")


@dataclass
class Tally:
    hits: int = 0
    misses: int = 0  # tier images built (or pulled) on the engine a service landed on
    first: int = 0  # of those, the first build anywhere of that tier version: unavoidable
    bytes: int = 0
    seconds: float = 0.0  # every engine's build seconds (tiers and services)
    busiest: float = 0.0  # the busiest engine's build seconds, summed over commits

    def add(self, other: Tally) -> None:
        self.hits += other.hits
        self.misses += other.misses
        self.first += other.first
        self.bytes += other.bytes
        self.seconds += other.seconds
        self.busiest += other.busiest


@dataclass
class Pool:
    strategy: Strategy
    engines: list[str]
    caches: dict[str, set[tuple[str, int]]]
    versions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BY_NAME, 0))
    seed: int = 0  # salts the per-build draws (random, least-loaded's ties)
    built: set[tuple[str, int]] = field(default_factory=set)  # built anywhere, ever

    def apply(self, event: Event) -> None:
        if event.join:
            self.engines.append(event.engine)
            self.caches[event.engine] = set()
        else:
            self.engines.remove(event.engine)
            del self.caches[event.engine]  # its cache goes with it

    def build(self, commit: Commit) -> Tally:
        if commit.tier:
            for tier in TIERS:
                if commit.changed in CHAINS[tier.name]:
                    self.versions[tier.name] += 1
        return self._land(commit.affected(), str(commit.index))

    def rewarm(self) -> int:
        """The bytes built (or pulled) if every service were built once now: what a pool
        that just changed must move before its services land warm again."""
        return self._land(sorted(SERVICES), "rewarm").bytes

    def _land(self, services: Sequence[str], build: str) -> Tally:
        tally = Tally()
        load: dict[str, int] = {}
        seconds: dict[str, float] = {}
        for service in services:
            leaf = SERVICES[service]
            engine = self.strategy.pick(
                service, leaf, self.engines, f"{self.seed}/{build}/{service}", load
            )
            load[engine] = load.get(engine, 0) + 1
            cache = self.caches[engine]
            spent = SERVICE_SECONDS
            for name in CHAINS[leaf]:
                layer = (name, self.versions[name])
                if layer in cache:
                    tally.hits += 1
                    continue
                tally.misses += 1
                tally.first += layer not in self.built
                tally.bytes += BY_NAME[name].mb * MB
                spent += BY_NAME[name].seconds
                cache.add(layer)
                self.built.add(layer)
            seconds[engine] = seconds.get(engine, 0.0) + spent
        tally.seconds = sum(seconds.values())
        tally.busiest = max(seconds.values())
        return tally


@dataclass(frozen=True)
class Row:
    strategy: str
    engines: int
    commits: int
    tally: Tally
    # bytes the joins (resp. leaves) moved, and how many there were
    joined: tuple[int, int]
    left: tuple[int, int]

    @property
    def hit_rate(self) -> float:
        return self.tally.hits / max(1, self.tally.hits + self.tally.misses)

    @property
    def builds_per_change(self) -> float:
        return self.tally.misses / self.commits

    @property
    def gb_per_change(self) -> float:
        return self.tally.bytes / 1e9 / self.commits

    @property
    def gb_per_join(self) -> float:
        return self.joined[0] / 1e9 / max(1, self.joined[1])

    @property
    def gb_per_leave(self) -> float:
        return self.left[0] / 1e9 / max(1, self.left[1])

    @property
    def copies(self) -> float:
        """On how many engines each tier version was built, on average."""
        return self.tally.misses / max(1, self.tally.first)

    @property
    def seconds_per_change(self) -> float:
        return self.tally.seconds / self.commits

    @property
    def busiest_seconds(self) -> float:
        return self.tally.busiest / self.commits


def simulate(strategy: str, engines: int, commits: int, seeds: Sequence[int]) -> Row:
    """One strategy on one pool size, summed over the histories of ``seeds``."""
    total = Tally()
    churn = {True: [0, 0], False: [0, 0]}  # join or leave: [bytes, events]
    for seed in seeds:
        names = engine_names(engines, seed)
        pool = Pool(Strategy(strategy), names, {name: set() for name in names}, seed=seed)
        pool.build(Commit(-1, "base", tier=True))  # the first build of everything, not counted
        work = history(commits, seed)
        changes = {event.at: event for event in events(engines, commits, seed)}
        for commit in work:
            event = changes.get(commit.index)
            if event is not None:
                # what the event moves: every service built once from the pool with it, less
                # the same from the pool without it (both copies: the history goes on as is)
                changed = copy.deepcopy(pool)
                changed.apply(event)
                churn[event.join][0] += changed.rewarm() - copy.deepcopy(pool).rewarm()
                churn[event.join][1] += 1
                pool.apply(event)
            total.add(pool.build(commit))
    joined, left = churn[True], churn[False]
    return Row(
        strategy,
        engines,
        commits * len(seeds),
        total,
        (joined[0], joined[1]),
        (left[0], left[1]),
    )


def table(rows: Sequence[Row]) -> str:
    lines = [
        (
            "| strategy | engines | tier hit rate | tier builds / change | GB built / change "
            "| copies of each tier | engine s / change | busiest engine s / change "
            "| GB moved per join | GB moved per leave |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.strategy} | {r.engines} | {r.hit_rate:.1%} | {r.builds_per_change:.2f} "
        f"| {r.gb_per_change:.2f} | {r.copies:.2f} | {r.seconds_per_change:.0f} "
        f"| {r.busiest_seconds:.0f} | {r.gb_per_join:.2f} | {r.gb_per_leave:.2f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


# Each measure: the Row attribute, its heading, whether higher is better, and whether ours is
# compared as a ratio (else as a difference: a leave moves about nothing, give or take the
# draws, where every engine already holds every tier).
MEASURES: tuple[tuple[str, str, bool, bool], ...] = (
    ("hit_rate", "tier hit rate", True, True),
    ("gb_per_change", "GB built / change", False, True),
    ("seconds_per_change", "engine s / change", False, True),
    ("busiest_seconds", "busiest engine s / change", False, True),
    ("gb_per_join", "GB moved per join", False, True),
    ("gb_per_leave", "GB moved per leave", False, False),
)


def ratios(rows: Sequence[Row]) -> str:
    """Ours against the best of the per-build strategies, per pool size and measure."""
    heads = [f"{h}: ours {'/' if r else '-'} best peer" for _, h, _, r in MEASURES]
    lines = ["| engines | " + " | ".join(heads) + " |", "|---" * (len(MEASURES) + 1) + "|"]
    for engines in sorted({r.engines for r in rows}):
        ours = next(r for r in rows if r.engines == engines and r.strategy == "rendezvous")
        peers = [r for r in rows if r.engines == engines and r.strategy != "rendezvous"]
        cells = [str(engines)]
        for attr, _, higher, ratio in MEASURES:
            best = sorted(peers, key=lambda r: float(getattr(r, attr)), reverse=higher)[0]
            mine, theirs = float(getattr(ours, attr)), float(getattr(best, attr))
            if not ratio:
                cells.append(f"{mine - theirs:+.2f} GB ({best.strategy})")
            else:
                cells.append(f"{mine / theirs:.2f}x ({best.strategy})" if theirs else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _row(rows: Sequence[Row], strategy: str, engines: int) -> Row:
    return next(r for r in rows if r.engines == engines and r.strategy == strategy)


def chart(rows: Sequence[Row], histories: int, target: Path) -> bool:
    plt = charts.pyplot()
    if plt is None:
        return False
    sizes = sorted({r.engines for r in rows})
    colors = {
        "rendezvous": "#1f77b4",
        "sticky-service": "#9467bd",
        "round-robin": "#7f7f7f",
        "least-loaded": "#bcbd22",
        "random": "#d62728",
    }
    fig, grid = plt.subplots(2, 4, figsize=(19, 8))
    axes = list(grid.flat)
    width = 0.8 / len(STRATEGIES)
    for ax, (attr, heading, _, _) in zip(axes, MEASURES, strict=False):
        for i, strategy in enumerate(STRATEGIES):
            values: list[float] = [float(getattr(_row(rows, strategy, n), attr)) for n in sizes]
            if attr == "hit_rate":  # drawn as misses: the differences show from a zero base
                values = [100 * (1 - v) for v in values]
            xs = [x + (i - (len(STRATEGIES) - 1) / 2) * width for x in range(len(sizes))]
            ax.bar(xs, values, width=width, label=strategy, color=colors[strategy])
        ax.set_xticks(range(len(sizes)), [f"{n} engine{'s' * (n > 1)}" for n in sizes])
        ax.axhline(0, color="black", linewidth=0.6)
        title = "tier miss rate (%)" if attr == "hit_rate" else heading
        ax.set_title(f"{title}, lower is better", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[len(MEASURES) :]:
        ax.axis("off")
    axes[-2].legend(handles, labels, loc="upper left", fontsize=11, frameon=False)
    axes[-1].text(
        0.0,
        1.0,
        "\n".join(
            [
                "tiers (on parent: own size, build time, services):",
                *(
                    f"  {t.name}{f' (on {t.parent})' if t.parent else ''}: {t.mb} MB, "
                    f"{t.seconds:.0f} s, {t.services}"
                    for t in TIERS
                ),
                f"a changed service: {SERVICE_SECONDS:.0f} s on its engine",
            ]
        ),
        va="top",
        fontsize=9,
        family="monospace",
        transform=axes[-1].transAxes,
    )
    fig.suptitle(
        f"{len(SERVICES)} services over {len(TIERS)} tiers, {histories} histories of "
        f"{rows[0].commits // histories} commits, an engine joining and leaving twice in each: "
        "rendezvous on the leaf tier against what a pool does without it",
        fontsize=11,
    )
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="See benchmarks/README.md."
    )
    parser.add_argument("--commits", type=int, default=500, help="commits simulated (500)")
    parser.add_argument(
        "--engines", type=int, nargs="+", default=[1, 5, 20], help="pool sizes (1 5 20)"
    )
    parser.add_argument("--seed", type=int, default=21, help="the first history's seed (21)")
    parser.add_argument(
        "--histories", type=int, default=5, help="histories (seeds) summed per figure (5)"
    )
    parser.add_argument(
        "--chart", type=Path, default=CHART, help="where the chart goes (docs/images/placement.png)"
    )
    parser.add_argument("--no-chart", action="store_true", help="print the tables only")
    args = parser.parse_args(argv)
    if args.commits < MIN_COMMITS or min(args.engines) < 1 or args.histories < 1:
        parser.error(
            f"--commits must be at least {MIN_COMMITS}, --histories and every pool size at least 1"
        )
    seeds = range(args.seed, args.seed + args.histories)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # pipeline.core.placement, from a checkout
    rows = [
        simulate(strategy, engines, args.commits, seeds)
        for engines in sorted(set(args.engines))
        for strategy in STRATEGIES
    ]
    tiers = ", ".join(f"{t.name} {t.mb} MB/{t.seconds:.0f} s/{t.services}" for t in TIERS)
    print(
        f"{len(SERVICES)} services; tiers (own size/build time/services): {tiers}; "
        f"{args.commits} commits, {TIER_CHANGE_SHARE:.0%} change a tier; "
        f"{args.histories} histories, seeds {seeds.start}-{seeds.stop - 1}\n"
    )
    print(table(rows))
    print(ratios(rows))
    if not args.no_chart and chart(rows, args.histories, args.chart):
        print(f"chart: {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
