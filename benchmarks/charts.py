"""What the benchmarks' charts share: matplotlib's pyplot, drawing to files only, or None
with a warning that says how to install it (the `bench` dependency group)."""

from __future__ import annotations

import sys
from typing import Any


def pyplot() -> Any | None:  # noqa: ANN401 - matplotlib ships no types here
    try:
        import matplotlib as mpl  # type: ignore[import-not-found,unused-ignore]

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        print(
            "warning: matplotlib is not installed; no chart (install it with "
            "`uv sync --group bench` or `.venv/bin/python -m pip install matplotlib`)",
            file=sys.stderr,
        )
        return None
    return plt
