"""The few calls whose meaning changed between the Dagger generations the pipeline serves:
v0.11 (what this project's engine harness builds) and v0.12+ up to v0.21 (what users run).

- ``with_exec`` and an image's ENTRYPOINT: v0.11 runs the command through the entrypoint
  unless told to skip it; v0.12+ skips it unless told to use it. ``run`` never uses it, on
  either, so a base image with an ENTRYPOINT changes no build step.
- Services (``as_service``) are not used: health probes run inside the image, so neither the
  generations' different service start (v0.15: default args; v0.20.1: an inherited Docker
  ``HEALTHCHECK`` holds the service back) nor their host-name resolution matters.
- A cache volume mounted in two sharing modes is two volumes on v0.21 (one on v0.11):
  ``images.with_cache`` mounts each tool's volume in one mode everywhere.
- Image configs: both stamp each layer's history with the engine's cache-record time, and
  neither lets a client set the source date epoch; each describes a step in its own words
  (v0.11 "copy / /", "pulled from <ref>"; v0.21 "Directory.withDirectory"). After the export
  ``supply/ocilayout.normalize`` sets the times to the commit's and drops the words, so both
  give one digest (``tests/test_generations.py`` builds on both engines and compares).
- ``Container.asTarball``: v0.11 copies the whole tarball into its cache through its file
  sync, ten times slower than an export to the client; ``runner._read_facts`` exports there.
Everything else the builders call is spelled the same by both SDKs (arguments positional
where their names changed, as ``with_directory``'s did in v0.19).
"""

from __future__ import annotations

import inspect
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import dagger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

T = TypeVar("T")


@cache
def _exec_parameters() -> frozenset[str]:
    return frozenset(inspect.signature(dagger.Container.with_exec).parameters)


def legacy() -> bool:
    """Whether the SDK speaks the v0.11 API (``skip_entrypoint``)."""
    return "skip_entrypoint" in _exec_parameters()


def run(args: Sequence[str]) -> Callable[[dagger.Container], dagger.Container]:
    """A step running ``args`` as given, whatever the image's ENTRYPOINT."""
    options: dict[str, Any] = {"skip_entrypoint": True} if legacy() else {}

    def step(ctr: dagger.Container) -> dagger.Container:
        return ctr.with_exec(list(args), **options)

    return step


def shared(obj: T) -> T:
    """``obj`` (a Dagger object given as an argument to other calls) asking the engine for its
    ID once. Both SDKs fetch the ID of every object argument of a query before sending it, one
    request each, and nothing remembers it: a cache volume or a tier's layer that every
    service's queries take, resolved by a dozen queries at once, cost a thousand requests in
    a build of five services. Its ID is the same each time: fetched once, under a lock so
    that concurrent queries wait for the one request."""
    fetch: Callable[[], Awaitable[object]] = obj.id  # type: ignore[attr-defined]
    known: list[object] = []
    lock = anyio.Lock()

    async def id_once() -> object:
        if not known:
            async with lock:
                if not known:
                    known.append(await fetch())
        return known[0]

    setattr(obj, "id", id_once)  # noqa: B010 - an instance attribute shadowing the method
    return obj
