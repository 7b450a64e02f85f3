#!/usr/bin/python3
"""Call helloworld.Greeter/SayHello and print the reply message.

    /usr/bin/python3 greeter_client.py [--server 127.0.0.1:50051] NAME

On an RPC error prints the status to stderr and exits 1.
"""

import argparse
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conduit_protos import helloworld_pb2  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("CONDUIT_SERVER", "127.0.0.1:50051").split("://")[-1], help="host:port (default: $CONDUIT_SERVER, else 127.0.0.1:50051)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds")
    parser.add_argument("name")
    args = parser.parse_args()

    with grpc.insecure_channel(args.server) as channel:
        say_hello = channel.unary_unary(
            "/helloworld.Greeter/SayHello",
            request_serializer=helloworld_pb2.HelloRequest.SerializeToString,
            response_deserializer=helloworld_pb2.HelloReply.FromString)
        try:
            reply = say_hello(helloworld_pb2.HelloRequest(name=args.name), timeout=args.timeout)
        except grpc.RpcError as e:
            print("SayHello failed: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
            return 1
    print(reply.message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
