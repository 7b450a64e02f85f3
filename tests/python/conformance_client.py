#!/usr/bin/python3
"""Protocol edge cases with grpcio (C-core) as the client; prints one line per case: NAME CODE.

    /usr/bin/python3 conformance_client.py --server 127.0.0.1:50051
    /usr/bin/python3 conformance_client.py --server 127.0.0.1:50051 --age-loop 10

With --age-loop, calls Unary (which answers with the caller's peer) one after another until the
calls went over 3 connections or the seconds ran out, and prints: calls N failed F connections C.

Calls /conduit.tests.Probe/Unary (the Conduit.Grpc tests' probe service) with raw bytes, so no
generated code is needed: an empty message is zero bytes.
"""

import argparse
import sys

import grpc

METHOD = "/conduit.tests.Probe/Unary"


def call(channel, method, metadata=None):
    unary = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        unary(b"", timeout=10, metadata=metadata)
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def peer_of(reply):
    """conduit.tests.Msg with field 1 (text) only: 0x0a, length, bytes."""
    return reply[2:2 + reply[1]].decode() if reply[:1] == b"\x0a" else ""


def age_loop(channel, seconds):
    import time
    unary = channel.unary_unary(METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    peers, calls, failed = set(), 0, 0
    end = time.monotonic() + seconds
    while len(peers) < 3 and time.monotonic() < end:
        calls += 1
        try:
            peers.add(peer_of(unary(b"", timeout=5)))
        except grpc.RpcError as e:
            failed += 1
            print("failed:", e.code().name, e.details(), file=sys.stderr)
    print("calls %d failed %d connections %d" % (calls, failed, len(peers)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="127.0.0.1:50051", help="host:port")
    parser.add_argument("--age-loop", type=float, default=0, help="seconds")
    args = parser.parse_args()
    if args.age_loop:
        with grpc.insecure_channel(args.server) as channel:
            age_loop(channel, args.age_loop)
        return 0
    cases = [
        ("plain", METHOD, None),
        ("two_authorization_headers", METHOD, [("authorization", "Bearer a"), ("authorization", "Bearer b")]),
        ("wrong_case_service", "/conduit.tests.probe/Unary", None),
        ("wrong_case_method", "/conduit.tests.Probe/unary", None),
        ("metadata_95_entries", METHOD, [("x-m-%d" % i, "v") for i in range(95)]),
        ("metadata_20k", METHOD, [("x-big", "a" * 20000)]),
    ]
    options = [("grpc.max_metadata_size", 64 * 1024)]
    with grpc.insecure_channel(args.server, options=options) as channel:
        for name, method, metadata in cases:
            print(name, call(channel, method, metadata))
    return 0


if __name__ == "__main__":
    sys.exit(main())
