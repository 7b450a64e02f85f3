#!/usr/bin/python3
"""helloworld.Greeter on grpcio (sync server): a reference point for bench/compare.sh.
Usage: /usr/bin/python3 greeter_server.py PORT"""
import os
import sys
from concurrent import futures

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tests", "python"))
from conduit_protos import helloworld_pb2  # noqa: E402


def say_hello(request, context):
    return helloworld_pb2.HelloReply(message="Hello " + request.name)


def main():
    port = sys.argv[1] if len(sys.argv) > 1 else "50093"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("helloworld.Greeter", {
        "SayHello": grpc.unary_unary_rpc_method_handler(
            say_hello, request_deserializer=helloworld_pb2.HelloRequest.FromString,
            response_serializer=helloworld_pb2.HelloReply.SerializeToString),
    }),))
    server.add_insecure_port("127.0.0.1:" + port)
    server.start()
    print("python greeter listening on 127.0.0.1:" + port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
