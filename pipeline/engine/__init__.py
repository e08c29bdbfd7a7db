"""The engine wing: everything that speaks to Dagger. Its modules are the only ones that
import the SDK, and they do it through this package, which imports it first (below)."""

import os

# The SDK wraps about 800 of its methods in beartype's runtime type checks as it is imported:
# 0.4 CPU-seconds, the largest part of an edit's start. beartype reduces its decorator to
# nothing while PYTHONOPTIMIZE is a positive integer at decoration time (beartype's own
# documented switch), so the SDK is imported with it set and the variable is put back at
# once: Python itself is not optimised (asserts stay), no other module or subprocess sees it,
# and the pipeline's calls into the SDK are type-checked statically (mypy --strict) instead.
_OPTIMIZE = "PYTHONOPTIMIZE"
_given = os.environ.get(_OPTIMIZE)
os.environ[_OPTIMIZE] = "1"
try:
    import dagger  # noqa: F401
finally:
    if _given is None:
        del os.environ[_OPTIMIZE]
    else:
        os.environ[_OPTIMIZE] = _given
