"""A line-based TCP echo server: each line comes back as it was sent, until the client
closes the connection."""

from __future__ import annotations

import asyncio


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
    finally:
        writer.close()


async def start(host: str, port: int) -> asyncio.Server:
    return await asyncio.start_server(_echo, host, port)


async def self_test() -> bool:
    """Start on a free port, send one line, expect it back."""
    server = await start("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping\n")
    await writer.drain()
    answer = await reader.readline()
    writer.close()
    server.close()
    await server.wait_closed()
    return answer == b"ping\n"
