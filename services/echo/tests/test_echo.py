import asyncio

from echo.server import self_test, start


def test_self_test_passes():
    assert asyncio.run(self_test())


def test_lines_come_back_in_order():
    async def exchange() -> list[bytes]:
        server = await start("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"one\ntwo\n")
        await writer.drain()
        lines = [await reader.readline(), await reader.readline()]
        writer.close()
        server.close()
        await server.wait_closed()
        return lines

    assert asyncio.run(exchange()) == [b"one\n", b"two\n"]
