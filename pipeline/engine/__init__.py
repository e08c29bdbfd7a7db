"""The engine wing: everything that speaks to Dagger. Its modules are the only ones that
import the SDK, and they do it through this package, which imports it first (below)."""

import functools
import os
from collections.abc import Callable

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


def _lazy_converters() -> None:
    """The SDK makes a new cattrs converter for every query object it builds (each chained
    call's ``Context``): about 300 of them in a one-line edit, 0.2 CPU-seconds of the CLI's
    spent before the first query leaves. A converter is needed per object only to turn a
    result into objects bound to that query (its structure hook keeps the object's context);
    turning a call's arguments into JSON, or a result into an ID, a string, a number or an
    enum, is the same for every object. So one shared converter does those, and an object
    gets a converter of its own only when a result is structured into objects (a list of
    them): a cold build of the example made 188 converters, and now makes 5 (the CLI's CPU
    1.97 → 1.70 seconds, medians of 5). Left as the SDK has it when its module is not laid
    out as expected."""
    import cattrs
    from dagger.client import _core

    found = getattr(_core, "make_converter", None)
    api_type = getattr(_core, "Type", None)  # the API's objects: bound to the query they came from
    if not callable(found) or getattr(found, "lazy", False) or not isinstance(api_type, type):
        return
    make: Callable[[object], cattrs.Converter] = found
    bound: type = api_type

    @functools.cache
    def shared() -> cattrs.Converter:
        return make(None)  # never structures an object, the one thing its context serves

    class Converter:
        """What the SDK's ``make_converter`` now gives: called with a query's context."""

        __slots__ = ("_ctx", "_made")
        lazy = True  # installed: a second call leaves it be

        def __init__(self, ctx: object) -> None:
            self._ctx: object = ctx
            self._made: cattrs.Converter | None = None

        def _own(self) -> cattrs.Converter:
            if self._made is None:
                self._made = make(self._ctx)
            return self._made

        def unstructure(self, obj: object, unstructure_as: object = None) -> object:
            return shared().unstructure(obj, unstructure_as)

        def structure(self, obj: object, cl: type[object]) -> object:
            if isinstance(cl, type) and not issubclass(cl, bound):
                return shared().structure(obj, cl)  # an ID, a string, a number, an enum
            return self._own().structure(obj, cl)

        def __getattr__(self, name: str) -> object:
            return getattr(self._own(), name)

    _core.make_converter = Converter


_lazy_converters()
