#!/usr/bin/python3
"""Call helloworld.Greeter/SayHello and print the reply message.

    /usr/bin/python3 greeter_client.py [--server 127.0.0.1:50051] NAME

Over TLS with --ca-file (the CA the server's certificate chains to; give --server as
localhost:PORT), with a client certificate for mutual TLS with --cert and --key; --token sends
`authorization: Bearer <token>`.

On an RPC error prints the status to stderr and exits 1.
"""

import argparse
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conduit_protos import helloworld_pb2  # noqa: E402


def read(path):
    with open(path, "rb") as f:
        return f.read()


def channel_for(args):
    if not args.ca_file:
        return grpc.insecure_channel(args.server)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca_file),
        private_key=read(args.key) if args.key else None,
        certificate_chain=read(args.cert) if args.cert else None)
    return grpc.secure_channel(args.server, credentials)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("CONDUIT_SERVER", "127.0.0.1:50051").split("://")[-1], help="host:port (default: $CONDUIT_SERVER, else 127.0.0.1:50051)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds")
    parser.add_argument("--ca-file", help="PEM CA: call over TLS")
    parser.add_argument("--cert", help="PEM client certificate (mutual TLS)")
    parser.add_argument("--key", help="PEM key of --cert")
    parser.add_argument("--token", help="bearer token")
    parser.add_argument("name")
    args = parser.parse_args()

    metadata = [("authorization", "Bearer " + args.token)] if args.token else []
    with channel_for(args) as channel:
        say_hello = channel.unary_unary(
            "/helloworld.Greeter/SayHello",
            request_serializer=helloworld_pb2.HelloRequest.SerializeToString,
            response_deserializer=helloworld_pb2.HelloReply.FromString)
        try:
            reply = say_hello(helloworld_pb2.HelloRequest(name=args.name), timeout=args.timeout, metadata=metadata)
        except grpc.RpcError as e:
            print("SayHello failed: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
            return 1
    print(reply.message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
