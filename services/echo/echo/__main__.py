import argparse
import asyncio
import sys

from echo.server import self_test, start


async def main(port: int) -> None:
    server = await start("0.0.0.0", port)
    print(f"echo listening on {port}", flush=True)
    async with server:
        await server.serve_forever()


parser = argparse.ArgumentParser(description="the line echo server")
parser.add_argument("--port", type=int, default=7000)
parser.add_argument("--self-test", action="store_true", help="echo one line and exit")
args = parser.parse_args()
if args.self_test:
    sys.exit(0 if asyncio.run(self_test()) else 1)
asyncio.run(main(args.port))
