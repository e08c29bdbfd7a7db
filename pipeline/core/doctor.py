"""What ``pipeline doctor`` found: one line per piece a run needs, and the fix for each
problem. Pure: the checks themselves live where their pieces do (engine, edges)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    """One piece a run needs: ``ok`` with what was seen, or a problem with its fix."""

    name: str
    ok: bool
    seen: str
    fix: str = ""

    @classmethod
    def good(cls, name: str, seen: str) -> Finding:
        return cls(name, ok=True, seen=seen)

    @classmethod
    def bad(cls, name: str, seen: str, fix: str) -> Finding:
        return cls(name, ok=False, seen=seen, fix=fix)

    def line(self, width: int) -> str:
        mark = "ok  " if self.ok else "FAIL"
        said = self.seen if self.ok or not self.fix else f"{self.seen}; fix: {self.fix}"
        return f"{mark} {self.name:<{width}} {said}"


def render(findings: list[Finding]) -> str:
    width = max((len(f.name) for f in findings), default=0)
    problems = sum(not f.ok for f in findings)
    lines = [f.line(width) for f in findings]
    lines.append(
        f"{problems} problem{'s' if problems != 1 else ''} found"
        if problems
        else "everything a run needs is there"
    )
    return "\n".join(lines)


def generation(version: str) -> str:
    """A Dagger version's generation, ``0.21`` for ``v0.21.8`` (SDK, CLI and engine alike);
    the version as given when it is not one."""
    found = re.match(r"v?(\d+\.\d+)\.", version.strip())
    return found[1] if found else version
