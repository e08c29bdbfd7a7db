"""Run in a child tier's builder, on its parent's venv: the packages that installing the tier's
requirements there adds, as exact pins (``name==version``, one a line, sorted), written to OUT.
The tier's install then runs apart from its parent's venv, from these pins alone: the engine
reuses it, and its layer, for as long as the pins are the same, whatever else changed below.

The parent's installed set (``uv pip freeze``) constrains the resolution (``uv pip compile
-c``): a tier never changes a package of the tier below it, since its layer could not remove
the files the old version had. A requirement that would is an error naming the fix.

With ``--installed PINS`` (repeatable), the venv is taken to hold those pins too, as it will
once the installs planned from them are laid on it: a child's plan need not wait for its
parent's install, only for the parent's plan.

Usage: ``python -c TEXT PYTHON OUT [--installed PINS]... REQUIREMENTS...``. Standard library
only; ``uv`` on PATH.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

CHANGES = 3  # the exit status when a pin of the parent would change
CONFLICT = (
    "pipeline: the requirements conflict with what the tier below installed (uv's words "
    "above); fix: align the versions, or move the package into the lower tier's requirements: "
    "neither a tier nor the test requirements can change a package of the tier below them"
)


def key(line: str) -> tuple[str, str]:
    """A pin as (normalised name, what pins it): ``PyYAML==6.0.2`` -> (pyyaml, ==6.0.2)."""
    found = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)", line)
    if found is None:
        return line, ""
    return re.sub(r"[-_.]+", "-", found[1]).lower(), found[2].strip()


def pins(text: str) -> dict[str, str]:
    """Each pinned package's spec, by normalised name, from freeze's or compile's output."""
    out = {}
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            name, spec = key(line)
            out[name] = spec
    return out


def uv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["uv", *args], stdout=subprocess.PIPE, text=True, check=False)


def split(args: list[str]) -> tuple[list[str], list[str]]:
    """The ``--installed`` pin files at the head of ``args``, and the requirements after."""
    installed = []
    while len(args) > 1 and args[0] == "--installed":
        installed.append(args[1])
        args = args[2:]
    return installed, args


def main(argv: list[str]) -> int:
    python, out = argv[:2] if len(argv) > 1 else ("", "")
    installed, requirements = split(argv[2:])
    if not requirements:
        sys.stderr.write("usage: plan.py PYTHON OUT [--installed PINS]... REQUIREMENTS...\n")
        return 2
    venv = uv("pip", "freeze", "--python", python)
    if venv.returncode:
        return venv.returncode
    frozen = venv.stdout + "".join(Path(path).read_text(encoding="utf-8") for path in installed)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write(frozen)
    compile_ = ["pip", "compile", "-q", "--no-header", "--no-annotate", "--python", python]
    resolved = uv(*compile_, "-c", fh.name, *requirements)
    Path(fh.name).unlink()
    if resolved.returncode:
        sys.stderr.write(CONFLICT + "\n")
        return resolved.returncode
    below, wanted = pins(frozen), pins(resolved.stdout)
    changed = sorted(f"{n} {below[n]} -> {s}" for n, s in wanted.items() if below.get(n, s) != s)
    if changed:
        sys.stderr.write(f"would change: {', '.join(changed)}\n{CONFLICT}\n")
        return CHANGES
    added = sorted(f"{name}{spec}" for name, spec in wanted.items() if name not in below)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("".join(f"{line}\n" for line in added), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
