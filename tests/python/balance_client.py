#!/usr/bin/python3
"""Call helloworld.Greeter/SayHello COUNT times through one grpcio channel; print "ok COUNT".

    /usr/bin/python3 balance_client.py TARGET [--lb round_robin] [--count 30]

TARGET is anything grpcio takes, e.g. ipv4:127.0.0.1:5001,127.0.0.1:5002 or dns:///localhost:5001:
the :authority grpcio sends is then that very text (a comma list for ipv4:). Which server took
how many calls, the servers say (`conduit serve` prints its call count on SIGUSR1).
On an RPC error prints the status to stderr and exits 1.
"""

import argparse
import json
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conduit_protos import helloworld_pb2  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target")
    parser.add_argument("--lb", default="round_robin")
    parser.add_argument("--count", type=int, default=30)
    args = parser.parse_args()

    config = json.dumps({"loadBalancingConfig": [{args.lb: {}}]})
    options = [("grpc.service_config", config)]
    with grpc.insecure_channel(args.target, options=options) as channel:
        say_hello = channel.unary_unary(
            "/helloworld.Greeter/SayHello",
            request_serializer=helloworld_pb2.HelloRequest.SerializeToString,
            response_deserializer=helloworld_pb2.HelloReply.FromString)
        for i in range(args.count):
            try:
                say_hello(helloworld_pb2.HelloRequest(name="n%d" % i), timeout=10, wait_for_ready=True)
            except grpc.RpcError as e:
                print("SayHello failed: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
                return 1
    print("ok", args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
