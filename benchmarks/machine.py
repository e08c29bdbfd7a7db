"""The machine a benchmark runs on: its busy CPU time, a quiet start for each timed command,
and the pipeline's bytecode in place. Shared by peer.py and scale.py (imported from beside
them)."""

from __future__ import annotations

import compileall
import os
import time
from pathlib import Path

IO_TICKS = 12  # the field of a /proc/diskstats line: milliseconds spent doing I/O
QUIET_WINDOW = 0.5  # seconds over which settle measures the cores' and the disks' business


def busy_cpu_seconds() -> float:
    """CPU-seconds the whole machine has spent busy since boot (/proc/stat: user, nice,
    system, irq, softirq, steal over every core). The difference around a build counts every
    process that worked for it, whoever started it: the engine's container and its execs, the
    Dagger CLI, dockerd, containerd, BuildKit's runc steps, the check containers under their
    shims, the clients; and anything else busy on the machine then, which is why the
    benchmark records the idle rate before it starts (``idle_rate``)."""
    with Path("/proc/stat").open() as fh:
        fields = fh.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def idle_rate(seconds: float = 5.0) -> float:
    """Busy CPU-seconds per second with nothing timed running: the background every CPU
    figure includes (idle engines, dockerd, the rest of the machine)."""
    before = busy_cpu_seconds()
    time.sleep(seconds)
    return (busy_cpu_seconds() - before) / seconds


def _disks() -> list[str]:
    """The machine's block devices that are disks (not loop, RAM or compressed-RAM devices)."""
    return [
        d.name
        for d in Path("/sys/block").iterdir()
        if not d.name.startswith(("loop", "ram", "zram"))
    ]


def disk_busy_ms(disks: set[str]) -> int:
    """Milliseconds the ``disks`` have spent with I/O in flight since boot (the io_ticks
    field of /proc/diskstats, summed)."""
    with Path("/proc/diskstats").open() as fh:
        rows = [line.split() for line in fh]
    return sum(int(row[IO_TICKS]) for row in rows if len(row) > IO_TICKS and row[2] in disks)


def settle(quiet: float = 0.5, longest: float = 20.0, disk_quiet: float = 0.2) -> None:
    """Before each timed command: flush what the one before wrote (its page cache's writeback
    would otherwise be billed to the next command, whichever side runs it), then wait until
    the machine is quiet, at most ``longest`` seconds: under ``quiet`` busy cores and the
    disks busy under ``disk_quiet`` of the time, over ``QUIET_WINDOW``. Removing what a build or
    a prune left (dockerd's layers, the engine's garbage collection of its snapshots) is
    mostly waiting on the disk, which the busy cores alone do not show."""
    os.sync()
    disks = set(_disks())
    deadline = time.monotonic() + longest
    while time.monotonic() < deadline:
        before = disk_busy_ms(disks)
        cores = idle_rate(QUIET_WINDOW)
        disk = (disk_busy_ms(disks) - before) / 1000 / QUIET_WINDOW
        if cores < quiet and disk < disk_quiet:
            return


def compiled(package: Path) -> None:
    """The package's bytecode written beside its sources, as an install leaves it: with
    PYTHONDONTWRITEBYTECODE set (or a fresh checkout), every timed command would otherwise
    compile every module again, about 0.3 s of each warm build."""
    if not compileall.compile_dir(package, quiet=1):
        raise RuntimeError(f"{package}: a module does not compile")
