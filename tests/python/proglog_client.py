#!/usr/bin/python3
"""A client for the book's Log API: message classes generated from the book's own
api/v1/log.proto (tests/python/proglog/), none of Conduit's additions.

    /usr/bin/python3 proglog_client.py --server 127.0.0.1:50051

Runs the book's flow against the default log, which must be empty: produce, consume, produce and
consume through the streams, the past-the-end error, and a record produced twice is two records
(idempotent producing, which the book's messages cannot ask for, leaves it alone). Prints "ok" and exits 0; on a failed
check exits 1.
"""

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))


def load_book_protos():
    out = tempfile.mkdtemp(prefix="proglog_protos_")
    try:
        root = os.path.join(HERE, "proglog")
        subprocess.run(["/usr/bin/protoc", "-I", root, "--python_out=" + out, "api/v1/log.proto"], check=True)
        spec = importlib.util.spec_from_file_location("proglog_log_pb2", os.path.join(out, "api", "v1", "log_pb2.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        shutil.rmtree(out, ignore_errors=True)


def check(condition, message):
    if not condition:
        print("FAILED: " + message, file=sys.stderr)
        sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="127.0.0.1:50051", help="host:port")
    args = parser.parse_args()
    api = load_book_protos()

    with grpc.insecure_channel(args.server) as channel:
        def method(kind, name, request, response):
            return getattr(channel, kind)("/log.v1.Log/" + name, request_serializer=request.SerializeToString,
                                          response_deserializer=response.FromString)
        produce = method("unary_unary", "Produce", api.ProduceRequest, api.ProduceResponse)
        consume = method("unary_unary", "Consume", api.ConsumeRequest, api.ConsumeResponse)
        produce_stream = method("stream_stream", "ProduceStream", api.ProduceRequest, api.ProduceResponse)
        consume_stream = method("unary_stream", "ConsumeStream", api.ConsumeRequest, api.ConsumeResponse)

        # The book's server test: produce then consume.
        want = api.Record(value=b"hello world")
        offset = produce(api.ProduceRequest(record=want), timeout=30).offset
        got = consume(api.ConsumeRequest(offset=offset), timeout=30).record
        check(got.value == want.value and got.offset == offset, "produce/consume: %r" % got)

        # Past the log's boundary: an error, and no record.
        try:
            consume(api.ConsumeRequest(offset=offset + 1), timeout=30)
            check(False, "consume past the boundary succeeded")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.OUT_OF_RANGE, "past the boundary: %s" % e.code())

        # Streams.
        records = [api.Record(value=b"first message"), api.Record(value=b"second message")]
        responses = list(produce_stream(iter(api.ProduceRequest(record=r) for r in records), timeout=30))
        check([r.offset for r in responses] == [offset + 1, offset + 2], "ProduceStream offsets %r" % responses)
        stream = consume_stream(api.ConsumeRequest(offset=offset + 1), timeout=30)
        for i, want in enumerate(records):
            got = next(stream).record
            check(got.value == want.value and got.offset == offset + 1 + i, "ConsumeStream %d: %r" % (i, got))
        stream.cancel()

        # The book's request has no producer fields: the same record sent twice is two records
        # (Conduit's idempotent producing never applies to it).
        again = [produce(api.ProduceRequest(record=api.Record(value=b"twice")), timeout=30).offset for _ in range(2)]
        check(again == [offset + 3, offset + 4], "a repeated proglog Produce: %r" % again)

    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
