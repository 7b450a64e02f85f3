#!/usr/bin/python3
"""Store and get keys in cache.v1.Cache with an account token, through grpcio.

    /usr/bin/python3 cache_client.py --server 127.0.0.1:50051 --token TOKEN set KEY VALUE [--ttl-ms N] [--token-field]
    /usr/bin/python3 cache_client.py --server 127.0.0.1:50051 --token TOKEN get KEY
    /usr/bin/python3 cache_client.py --server 127.0.0.1:50051 --token TOKEN dump

The token goes in `authorization: Bearer <token>` metadata, or with --token-field in the
talk's StoreReq.account_token field. Prints the value (get), "key<TAB>value" lines (dump) or
"stored" (set); on an RPC error prints "error CODE: details" to stdout and exits 1.
"""

import argparse
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conduit_protos import cache_pb2  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("CONDUIT_SERVER", "127.0.0.1:50051").split("://")[-1], help="host:port (default: $CONDUIT_SERVER, else 127.0.0.1:50051)")
    parser.add_argument("--token", default="")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("set")
    s.add_argument("key")
    s.add_argument("value")
    s.add_argument("--ttl-ms", type=int, default=0)
    s.add_argument("--token-field", action="store_true")
    g = sub.add_parser("get")
    g.add_argument("key")
    sub.add_parser("dump")
    args = parser.parse_args()

    metadata = []
    if args.token and not getattr(args, "token_field", False):
        metadata.append(("authorization", "Bearer " + args.token))

    with grpc.insecure_channel(args.server) as channel:
        try:
            if args.command == "set":
                store = channel.unary_unary(
                    "/cache.v1.Cache/Store",
                    request_serializer=cache_pb2.StoreReq.SerializeToString,
                    response_deserializer=cache_pb2.StoreResp.FromString)
                request = cache_pb2.StoreReq(key=args.key, val=args.value.encode("utf-8"))
                if args.token_field:
                    request.account_token = args.token
                if args.ttl_ms:
                    request.ttl.FromMilliseconds(args.ttl_ms)
                store(request, metadata=metadata, timeout=args.timeout)
                print("stored")
            elif args.command == "get":
                get = channel.unary_unary(
                    "/cache.v1.Cache/Get",
                    request_serializer=cache_pb2.GetReq.SerializeToString,
                    response_deserializer=cache_pb2.GetResp.FromString)
                reply = get(cache_pb2.GetReq(key=args.key), metadata=metadata, timeout=args.timeout)
                print(reply.val.decode("utf-8"))
            else:
                dump = channel.unary_stream(
                    "/cache.v1.Cache/Dump",
                    request_serializer=cache_pb2.DumpReq.SerializeToString,
                    response_deserializer=cache_pb2.DumpItem.FromString)
                for item in dump(cache_pb2.DumpReq(), metadata=metadata, timeout=args.timeout):
                    print("%s\t%s" % (item.key, item.val.decode("utf-8")))
        except grpc.RpcError as e:
            print("error %s: %s" % (e.code().name, e.details()))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
