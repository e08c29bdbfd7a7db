import argparse

from greeter.server import build_server

parser = argparse.ArgumentParser(description="the greeter gRPC server")
parser.add_argument("--port", type=int, default=50051)
args = parser.parse_args()
server, port = build_server(f"[::]:{args.port}")
server.start()
print(f"greeter listening on {port}", flush=True)
server.wait_for_termination()
