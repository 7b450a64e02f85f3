#!/usr/bin/python3
"""An idempotent producer on grpcio (C-core), with the message classes generated from
protos/log/v1/log.proto: InitProducer, then Produce with producer id, epoch and sequence.

    /usr/bin/python3 idempotent_client.py --server 127.0.0.1:50051 [--topic T]

Checks, against a server whose topic is empty: a retried sequence gets the offset it got the
first time and appends nothing; a gap is OUT_OF_RANGE with ErrorInfo SEQUENCE_GAP {expected_sequence,
sequence}; a new epoch of the same id fences the old one (FAILED_PRECONDITION, PRODUCER_FENCED);
the same request without producer fields is appended every time. Prints "ok" and exits 0; on a
failed check exits 1.
"""

import argparse
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conduit_protos import error_details_pb2, log_pb2, status_pb2  # noqa: E402


def check(condition, message):
    if not condition:
        print("FAILED: " + message, file=sys.stderr)
        sys.exit(1)


def error_info(e):
    details = dict(e.trailing_metadata() or ()).get("grpc-status-details-bin")
    check(details is not None, "no grpc-status-details-bin")
    for d in status_pb2.Status.FromString(details).details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            return info
    check(False, "no ErrorInfo")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="127.0.0.1:50051", help="host:port")
    parser.add_argument("--topic", default="py-idempotent")
    args = parser.parse_args()
    topic = args.topic

    with grpc.insecure_channel(args.server) as channel:
        init = channel.unary_unary("/log.v1.Log/InitProducer",
                                   request_serializer=log_pb2.InitProducerRequest.SerializeToString,
                                   response_deserializer=log_pb2.InitProducerResponse.FromString)
        produce = channel.unary_unary("/log.v1.Log/Produce",
                                      request_serializer=log_pb2.ProduceRequest.SerializeToString,
                                      response_deserializer=log_pb2.ProduceResponse.FromString)

        producer = init(log_pb2.InitProducerRequest(topic=topic), timeout=30)
        check(producer.producer_id != 0 and producer.producer_epoch == 0, "InitProducer %r" % producer)

        def request(value, sequence, epoch=producer.producer_epoch):
            return log_pb2.ProduceRequest(topic=topic, record=log_pb2.Record(value=value),
                                          producer_id=producer.producer_id, producer_epoch=epoch, sequence=sequence)

        first = produce(request(b"a", 0), timeout=30).offset
        second = produce(request(b"b", 1), timeout=30).offset
        check((first, second) == (0, 1), "offsets %d %d" % (first, second))
        check(produce(request(b"a", 0), timeout=30).offset == 0, "a retry of sequence 0 was appended again")
        check(produce(request(b"b", 1), timeout=30).offset == 1, "a retry of sequence 1 was appended again")

        try:
            produce(request(b"d", 3), timeout=30)
            check(False, "a gap was appended")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.OUT_OF_RANGE, "gap: %s" % e.code())
            info = error_info(e)
            check(info.reason == "SEQUENCE_GAP" and info.metadata["expected_sequence"] == "2"
                  and info.metadata["sequence"] == "3", "gap ErrorInfo %r" % info)

        newer = init(log_pb2.InitProducerRequest(topic=topic, producer_id=producer.producer_id), timeout=30)
        check(newer.producer_epoch == 1, "epoch bump %r" % newer)
        check(produce(request(b"c", 0, epoch=1), timeout=30).offset == 2, "the new epoch's first record")
        try:
            produce(request(b"late", 2), timeout=30)
            check(False, "a fenced producer's record was appended")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.FAILED_PRECONDITION, "fenced: %s" % e.code())
            check(error_info(e).reason == "PRODUCER_FENCED", "fenced ErrorInfo")

        plain = log_pb2.ProduceRequest(topic=topic, record=log_pb2.Record(value=b"plain"))
        check([produce(plain, timeout=30).offset for _ in range(2)] == [3, 4], "plain produce is not deduplicated")

    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
