"""The few calls whose meaning changed between the Dagger generations the pipeline serves:
v0.11 (what this project's engine harness builds) and v0.12+ up to v0.21 (what users run).

- ``with_exec`` and an image's ENTRYPOINT: v0.11 runs the command through the entrypoint
  unless told to skip it; v0.12+ skips it unless told to use it. ``run`` never uses it, on
  either, so a base image with an ENTRYPOINT changes no build step.
- ``as_service``: v0.11 runs the container's last exec; v0.15+ runs its default args
  (``args=`` overrides them). ``service`` starts what ``docker run IMAGE`` starts: the
  entrypoint, if any, with the default args.
- A Docker ``HEALTHCHECK`` the image inherits: v0.20.1+ holds a service back until it passes
  (and fails its start when it fails: a base image's check often needs a tool the slim
  runtime lacks); v0.11 ignores it. ``service`` ignores it on every engine: the probes decide
  when a service is up.
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


@cache
def _service_parameters() -> frozenset[str]:
    return frozenset(inspect.signature(dagger.Container.as_service).parameters)


def legacy() -> bool:
    """Whether the SDK speaks the v0.11 API (``skip_entrypoint``)."""
    return "skip_entrypoint" in _exec_parameters()


def run(args: Sequence[str]) -> Callable[[dagger.Container], dagger.Container]:
    """A step running ``args`` as given, whatever the image's ENTRYPOINT."""
    options: dict[str, Any] = {"skip_entrypoint": True} if legacy() else {}

    def step(ctr: dagger.Container) -> dagger.Container:
        return ctr.with_exec(list(args), **options)

    return step


def service(ctr: dagger.Container, command: Sequence[str]) -> dagger.Service:
    """The image started as ``docker run`` starts it, with ``command`` as its default args."""
    if "args" in _service_parameters():
        if hasattr(ctr, "without_docker_healthcheck"):  # v0.20.1+
            ctr = ctr.without_docker_healthcheck()
        options: dict[str, Any] = {"use_entrypoint": True}
        return ctr.with_default_args(list(command)).as_service(**options)
    # v0.11: the service is the last exec, run through the entrypoint as docker run does.
    return ctr.with_exec(list(command)).as_service()


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
