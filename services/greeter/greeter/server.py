"""A gRPC greeter: one unary method over UTF-8 payloads (no generated stubs needed) and the
standard health service, so any gRPC health checker can probe it."""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "greeter.Greeter"


def greet(name: str) -> str:
    return f"Hello, {name.strip() or 'world'}!"


def _say_hello(request: bytes, context: grpc.ServicerContext) -> bytes:
    return greet(request.decode()).encode()


def build_server(address: str) -> tuple[grpc.Server, int]:
    """A server bound to ``address`` (not started) and the port it got."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    methods = {"SayHello": grpc.unary_unary_rpc_method_handler(_say_hello)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
    status = health.HealthServicer()
    for name in ("", SERVICE):
        status.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(status, server)
    return server, server.add_insecure_port(address)
