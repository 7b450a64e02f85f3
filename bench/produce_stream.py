"""One ProduceStream of N records of a given size (grpcio): records/s from the first request to the last answer.

Usage: /usr/bin/python3 bench/produce_stream.py --server 127.0.0.1:47300 --topic s100 --count 20000 --bytes 100
Prints one line: records, seconds, records/s, and checks that the answers are dense offsets in the
order sent (exit 1 otherwise, or on an error: the line then says how many were answered).
"""

import argparse
import os
import sys
import time

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from conduit_protos import log_pb2  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="host:port")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--bytes", type=int, default=100)
    args = parser.parse_args()
    value = b"x" * args.bytes
    with grpc.insecure_channel(args.server) as channel:
        stream = channel.stream_stream(
            "/log.v1.Log/ProduceStream",
            request_serializer=log_pb2.ProduceRequest.SerializeToString,
            response_deserializer=log_pb2.ProduceResponse.FromString)
        requests = (log_pb2.ProduceRequest(topic=args.topic, record=log_pb2.Record(value=value)) for _ in range(args.count))
        offsets = []
        start = time.monotonic()
        try:
            for reply in stream(requests, timeout=600):
                offsets.append(reply.offset)
        except grpc.RpcError as error:
            print("%d of %d records answered, then %s: %s" % (len(offsets), args.count, error.code(), error.details()))
            return 1
        seconds = time.monotonic() - start
    dense = len(offsets) == args.count and all(b == a + 1 for a, b in zip(offsets, offsets[1:]))
    print("%d records in %.2f s: %d records/s%s" % (len(offsets), seconds, len(offsets) / seconds, "" if dense else " (offsets NOT dense and in order)"))
    return 0 if dense else 1


if __name__ == "__main__":
    sys.exit(main())
