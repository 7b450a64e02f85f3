#!/usr/bin/python3
"""Reads one record with a grpcio channel at its default limits, by Consume and by ConsumeStream.

    /usr/bin/python3 consume_one.py --server 127.0.0.1:50051 --topic T --offset N

Prints "consume <value bytes>" and "stream <value bytes>"; a failed call exits 1 with its status.
"""

import argparse
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conduit_protos import log_pb2  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="host:port")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--offset", type=int, required=True)
    args = parser.parse_args()
    request = log_pb2.ConsumeRequest(topic=args.topic, offset=args.offset)
    with grpc.insecure_channel(args.server) as channel:  # no options: the default 4 MiB receive limit
        try:
            consume = channel.unary_unary("/log.v1.Log/Consume", request_serializer=log_pb2.ConsumeRequest.SerializeToString,
                                          response_deserializer=log_pb2.ConsumeResponse.FromString)
            print(f"consume {len(consume(request, timeout=30).record.value)}")
            stream = channel.unary_stream("/log.v1.Log/ConsumeStream", request_serializer=log_pb2.ConsumeRequest.SerializeToString,
                                          response_deserializer=log_pb2.ConsumeResponse.FromString)
            call = stream(request, timeout=30)
            print(f"stream {len(next(call).record.value)}")
            call.cancel()
        except grpc.RpcError as e:
            sys.exit(f"FAILED: {e.code()} {e.details()}")


if __name__ == "__main__":
    main()
