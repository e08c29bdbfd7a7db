import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from greeter.server import SERVICE, build_server, greet


@pytest.fixture
def channel():
    server, port = build_server("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    server.stop(None)


def test_greet():
    assert greet("ada") == "Hello, ada!"
    assert greet("  ") == "Hello, world!"


def test_say_hello_over_grpc(channel):
    say_hello = channel.unary_unary(f"/{SERVICE}/SayHello")
    assert say_hello(b"ada", timeout=5) == b"Hello, ada!"


def test_health_reports_serving(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    answer = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
