"""The machine a benchmark runs on: its busy CPU time, and a quiet start for each timed
command. Shared by peer.py and scale.py (imported from beside them)."""

from __future__ import annotations

import os
import time
from pathlib import Path


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


def settle(quiet: float = 0.5, longest: float = 20.0) -> None:
    """Before each timed command: flush what the one before wrote (its page cache's writeback
    would otherwise be billed to the next command, whichever side runs it), then wait until
    the machine is quiet (under ``quiet`` busy cores over half a second: dockerd and the
    engine finish removing what a build or a prune left), at most ``longest`` seconds."""
    os.sync()
    deadline = time.monotonic() + longest
    while time.monotonic() < deadline:
        if idle_rate(0.5) < quiet:
            return
