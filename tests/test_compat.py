"""compat.shared: an object given as an argument to many queries asks for its ID once."""

from __future__ import annotations

import anyio
import pytest

from pipeline.engine import compat


class _Counted:
    """Stands in for a Dagger object: ``id()`` is the one call the SDK makes of an argument."""

    def __init__(self) -> None:
        self.calls = 0

    async def id(self) -> str:
        self.calls += 1
        await anyio.sleep(0.01)  # a request in flight while the other callers ask
        return f"id-{self.calls}"


async def test_concurrent_callers_share_one_request():
    obj = compat.shared(_Counted())
    seen: list[object] = []

    async def ask() -> None:
        seen.append(await obj.id())

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(ask)
    assert obj.calls == 1
    assert seen == ["id-1"] * 20
    assert await obj.id() == "id-1"  # later callers too
    assert obj.calls == 1


async def test_a_failed_request_is_not_remembered():
    class Flaky(_Counted):
        async def id(self) -> str:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("engine went away")
            return "id-2"

    obj = compat.shared(Flaky())
    with pytest.raises(ConnectionError):
        await obj.id()
    assert await obj.id() == "id-2"
