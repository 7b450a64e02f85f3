#!/usr/bin/python3
"""A log.v1.Log client on grpcio (C-core), written the way a proglog client is: it produces
and consumes with the message classes generated from protos/log/v1/log.proto.

    /usr/bin/python3 log_client.py --server 127.0.0.1:50051 [--topic T] [--count N]

Checks, against a server whose topic is empty: Produce and ProduceStream give dense offsets,
Consume and ConsumeStream read the same bytes back, a consumer waiting at the end gets a record
produced after it joined, and Consume past the end answers OUT_OF_RANGE with ErrorInfo and
LocalizedMessage details. Prints "ok N records" and exits 0; on a failed check exits 1.
"""

import argparse
import os
import queue
import sys
import threading

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conduit_protos import error_details_pb2, log_pb2, status_pb2  # noqa: E402


def fail(message):
    print("FAILED: " + message, file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("CONDUIT_SERVER", "127.0.0.1:50051").split("://")[-1], help="host:port (default: $CONDUIT_SERVER, else 127.0.0.1:50051)")
    parser.add_argument("--topic", default="python")
    parser.add_argument("--count", type=int, default=50)
    args = parser.parse_args()
    topic, count = args.topic, args.count

    with grpc.insecure_channel(args.server) as channel:
        produce = channel.unary_unary(
            "/log.v1.Log/Produce",
            request_serializer=log_pb2.ProduceRequest.SerializeToString,
            response_deserializer=log_pb2.ProduceResponse.FromString)
        consume = channel.unary_unary(
            "/log.v1.Log/Consume",
            request_serializer=log_pb2.ConsumeRequest.SerializeToString,
            response_deserializer=log_pb2.ConsumeResponse.FromString)
        consume_stream = channel.unary_stream(
            "/log.v1.Log/ConsumeStream",
            request_serializer=log_pb2.ConsumeRequest.SerializeToString,
            response_deserializer=log_pb2.ConsumeResponse.FromString)
        produce_stream = channel.stream_stream(
            "/log.v1.Log/ProduceStream",
            request_serializer=log_pb2.ProduceRequest.SerializeToString,
            response_deserializer=log_pb2.ProduceResponse.FromString)

        def value(i):
            return ("python record %d " % i).encode() + bytes(range(256)) * (i % 3)

        # Produce, one call per record.
        half = count // 2
        for i in range(half):
            reply = produce(log_pb2.ProduceRequest(topic=topic, record=log_pb2.Record(value=value(i))), timeout=30)
            check(reply.offset == i, "Produce %d got offset %d" % (i, reply.offset))

        # ProduceStream: one response per request, in order.
        requests = (log_pb2.ProduceRequest(topic=topic, record=log_pb2.Record(value=value(i), key=b"k"))
                    for i in range(half, count))
        offsets = [r.offset for r in produce_stream(requests, timeout=30)]
        check(offsets == list(range(half, count)), "ProduceStream offsets %r" % offsets[:10])

        # Consume each one back.
        for i in range(count):
            record = consume(log_pb2.ConsumeRequest(topic=topic, offset=i), timeout=30).record
            check(record.offset == i and record.value == value(i), "Consume %d read back different bytes" % i)
            check(record.timestamp_unix_ms > 0, "record %d has no timestamp" % i)

        # ConsumeStream from 0: every record, then one produced after the consumer reached the end.
        stream = consume_stream(log_pb2.ConsumeRequest(topic=topic, offset=0), timeout=30)
        received = queue.Queue()

        def read():
            try:
                for response in stream:
                    received.put(response.record)
            except grpc.RpcError as e:
                received.put(e)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        for i in range(count):
            record = received.get(timeout=30)
            check(not isinstance(record, Exception), "ConsumeStream failed: %r" % (record,))
            check(record.offset == i and record.value == value(i), "ConsumeStream record %d differs" % i)
        check(received.empty(), "ConsumeStream sent more records than the log holds")
        reply = produce(log_pb2.ProduceRequest(topic=topic, record=log_pb2.Record(value=b"live")), timeout=30)
        live = received.get(timeout=30)
        check(not isinstance(live, Exception) and live.offset == reply.offset and live.value == b"live",
              "the waiting consumer did not get the new record: %r" % (live,))
        stream.cancel()
        reader.join(timeout=30)

        # Past the end: OUT_OF_RANGE with rich details.
        past = count + 100
        try:
            consume(log_pb2.ConsumeRequest(topic=topic, offset=past), timeout=30)
            fail("Consume past the end succeeded")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.OUT_OF_RANGE, "past the end: %s" % e.code())
            details = dict(e.trailing_metadata() or ()).get("grpc-status-details-bin")
            check(details is not None, "no grpc-status-details-bin")
            status = status_pb2.Status.FromString(details)
            info, message = error_details_pb2.ErrorInfo(), error_details_pb2.LocalizedMessage()
            found = {d.type_url.split("/")[-1] for d in status.details}
            check({"google.rpc.ErrorInfo", "google.rpc.LocalizedMessage"} <= found, "details %r" % found)
            for d in status.details:
                if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    d.Unpack(info)
                elif d.Is(error_details_pb2.LocalizedMessage.DESCRIPTOR):
                    d.Unpack(message)
            check(info.reason == "OFFSET_PAST_END" and info.metadata["offset"] == str(past)
                  and info.metadata["next_offset"] == str(count + 1), "ErrorInfo %r" % info)
            check(("Offset %d" % past) in message.message, "LocalizedMessage %r" % message.message)

    print("ok %d records" % (count + 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
