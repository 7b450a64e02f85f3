#!/usr/bin/python3
"""gRPC interop client (grpc/grpc doc/interop-test-descriptions.md), built on grpcio.

    /usr/bin/python3 interop_client.py --server_host 127.0.0.1 --server_port 50052 \\
        --test_case large_unary [--use_tls true --use_test_ca true --server_host_override foo.test.google.fr]

--test_case all runs every case. Prints `PASS <case>` to stdout per passing case
and `FAIL <case>: <reason>` to stderr per failing one; exits 0 only if all passed.

Response compression is observable: the channel is created with
grpc.per_message_decompression=0, so the deserializers see each message's
Compressed-Flag (see conduit_compression.py).
"""

import argparse
import os
import queue
import sys
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conduit_compression import DISABLE_DECOMPRESSION, deserializer  # noqa: E402
from conduit_protos import empty_pb2, messages_pb2 as m  # noqa: E402

CALL_TIMEOUT = 30.0  # seconds; every call has a deadline so a broken server never hangs us
SERVICE = "grpc.testing.TestService"
GZIP, PLAIN = grpc.Compression.Gzip, grpc.Compression.NoCompression
ECHO_METADATA = (("x-grpc-test-echo-initial", "test_initial_metadata_value"),
                 ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab"))
SPECIAL_STATUS_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"


class TestFailure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise TestFailure(message)


class Stub:
    """TestService (+ UnimplementedService) multi-callables from grpc's generic API.

    Every response arrives as conduit_compression.Received(message, compressed).
    """

    def __init__(self, channel):
        def method(kind, path, req_cls, resp_cls):
            return getattr(channel, kind)(path, request_serializer=req_cls.SerializeToString,
                                          response_deserializer=deserializer(resp_cls))
        svc = "/" + SERVICE + "/"
        Req, Resp = m.StreamingOutputCallRequest, m.StreamingOutputCallResponse
        self.empty_call = method("unary_unary", svc + "EmptyCall", empty_pb2.Empty, empty_pb2.Empty)
        self.unary_call = method("unary_unary", svc + "UnaryCall", m.SimpleRequest, m.SimpleResponse)
        self.streaming_output_call = method("unary_stream", svc + "StreamingOutputCall", Req, Resp)
        self.streaming_input_call = method("stream_unary", svc + "StreamingInputCall",
                                           m.StreamingInputCallRequest,
                                           m.StreamingInputCallResponse)
        self.full_duplex_call = method("stream_stream", svc + "FullDuplexCall", Req, Resp)
        # Upstream test.proto calls this method TestService/UnimplementedCall; this
        # repository's test.proto names it UnimplementedMethod. Either way the point
        # is an unknown method on a known service.
        self.unimplemented_method = method("unary_unary", svc + "UnimplementedMethod",
                                           empty_pb2.Empty, empty_pb2.Empty)
        self.unimplemented_service = method(
            "unary_unary", "/grpc.testing.UnimplementedService/UnimplementedCall",
            empty_pb2.Empty, empty_pb2.Empty)


class RequestPipe:
    """A request iterator fed one message at a time (for ping-pong style calls)."""
    _CLOSE = object()

    def __init__(self):
        self._queue = queue.Queue()

    def put(self, request):
        self._queue.put(request)

    def close(self):  # half-close; also unblocks grpc's sender thread after a failure
        self._queue.put(self._CLOSE)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._CLOSE:
                return
            yield item


def payload(size):
    return m.Payload(body=bytes(size))


def check_payload(received, size, what="response"):
    body = received.message.payload.body
    check(len(body) == size, "%s payload is %d bytes, want %d" % (what, len(body), size))
    check(body == bytes(size), "%s payload body is not all zeros" % what)


def expect_status(call, code, details=None):
    """Run call(); it must fail with `code` (and `details`, if given)."""
    try:
        call()
    except grpc.RpcError as e:
        check(e.code() == code, "got status %s (%r), want %s" % (e.code(), e.details(), code))
        if details is not None:
            check(e.details() == details, "got status message %r, want %r" % (e.details(), details))
        return
    raise TestFailure("call succeeded, want status %s" % code)


def check_echo_metadata(call, what):
    initial, trailing = ECHO_METADATA
    check(initial in [tuple(md) for md in call.initial_metadata()],
          "%s: initial metadata %r lacks %r" % (what, call.initial_metadata(), initial))
    check(trailing in [tuple(md) for md in call.trailing_metadata()],
          "%s: trailing metadata %r lacks %r" % (what, call.trailing_metadata(), trailing))


# ---------------------------------------------------------------- test cases

def empty_unary(stub):
    response = stub.empty_call(empty_pb2.Empty(), timeout=CALL_TIMEOUT)
    check(isinstance(response.message, empty_pb2.Empty), "response is not an Empty")


def large_unary(stub):
    response = stub.unary_call(m.SimpleRequest(response_size=314159, payload=payload(271828)),
                               timeout=CALL_TIMEOUT)
    check_payload(response, 314159)


def client_compressed_unary(stub):
    def request(expect_compressed):
        return m.SimpleRequest(expect_compressed=m.BoolValue(value=expect_compressed),
                               response_size=314159, payload=payload(271828))
    # Feature probe: uncompressed request that claims to be compressed.
    expect_status(lambda: stub.unary_call(request(True), compression=PLAIN, timeout=CALL_TIMEOUT),
                  grpc.StatusCode.INVALID_ARGUMENT)
    check_payload(stub.unary_call(request(True), compression=GZIP, timeout=CALL_TIMEOUT),
                  314159, "compressed call")
    check_payload(stub.unary_call(request(False), compression=PLAIN, timeout=CALL_TIMEOUT),
                  314159, "uncompressed call")


def server_compressed_unary(stub):
    for compressed in (True, False):
        response = stub.unary_call(
            m.SimpleRequest(response_compressed=m.BoolValue(value=compressed),
                            response_size=314159, payload=payload(271828)),
            timeout=CALL_TIMEOUT)
        check(response.compressed == compressed,
              "response_compressed=%s but the response's compressed flag is %s"
              % (compressed, response.compressed))
        check_payload(response, 314159)


def client_streaming(stub):
    requests = [m.StreamingInputCallRequest(payload=payload(n)) for n in (27182, 8, 1828, 45904)]
    response = stub.streaming_input_call(iter(requests), timeout=CALL_TIMEOUT)
    size = response.message.aggregated_payload_size
    check(size == 74922, "aggregated_payload_size %d, want 74922" % size)


def client_compressed_streaming(stub):
    def request(expect_compressed, size):
        return m.StreamingInputCallRequest(
            expect_compressed=m.BoolValue(value=expect_compressed), payload=payload(size))
    # Feature probe: an uncompressed first message that claims to be compressed.
    expect_status(lambda: stub.streaming_input_call(iter([request(True, 27182)]),
                                                    compression=PLAIN, timeout=CALL_TIMEOUT),
                  grpc.StatusCode.INVALID_ARGUMENT)
    # The spec wants message 1 compressed and message 2 NOT compressed. Not
    # possible with grpcio: call compression is chosen once per call, and the
    # request-iterator API has no per-message write flags (grpc._channel sends
    # every request with empty flags, so core's GRPC_WRITE_NO_COMPRESS is
    # unreachable). Core only sends a message of a compressed call uncompressed
    # when gzip would not shrink it, which never happens with the spec's all-zero
    # body. So BOTH messages go out compressed here. A server that correctly checks
    # only expect_compressed=true messages still passes; this client cannot test a
    # server's handling of a plain message inside a compressed stream.
    response = stub.streaming_input_call(iter([request(True, 27182), request(False, 45904)]),
                                         compression=GZIP, timeout=CALL_TIMEOUT)
    size = response.message.aggregated_payload_size
    check(size == 73086, "aggregated_payload_size %d, want 73086" % size)


def server_streaming(stub):
    sizes = [31415, 9, 2653, 58979]
    request = m.StreamingOutputCallRequest(
        response_parameters=[m.ResponseParameters(size=n) for n in sizes])
    responses = list(stub.streaming_output_call(request, timeout=CALL_TIMEOUT))
    check(len(responses) == len(sizes), "got %d responses, want %d" % (len(responses), len(sizes)))
    for i, (response, size) in enumerate(zip(responses, sizes)):
        check_payload(response, size, "response %d" % i)


def server_compressed_streaming(stub):
    params = [(True, 31415), (False, 92653)]
    request = m.StreamingOutputCallRequest(response_parameters=[
        m.ResponseParameters(compressed=m.BoolValue(value=c), size=n) for c, n in params])
    responses = list(stub.streaming_output_call(request, timeout=CALL_TIMEOUT))
    check(len(responses) == 2, "got %d responses, want 2" % len(responses))
    for i, (response, (compressed, size)) in enumerate(zip(responses, params)):
        check(response.compressed == compressed,
              "response %d: compressed flag is %s, want %s" % (i, response.compressed, compressed))
        check_payload(response, size, "response %d" % i)


def ping_pong(stub):
    pipe = RequestPipe()
    call = stub.full_duplex_call(iter(pipe), timeout=CALL_TIMEOUT)
    try:
        for i, (response_size, payload_size) in enumerate(
                [(31415, 27182), (9, 8), (2653, 1828), (58979, 45904)]):
            pipe.put(m.StreamingOutputCallRequest(
                response_parameters=[m.ResponseParameters(size=response_size)],
                payload=payload(payload_size)))
            response = next(call, None)
            check(response is not None, "stream ended after %d responses, want 4" % i)
            check_payload(response, response_size, "response %d" % i)
        pipe.close()
        check(next(call, None) is None, "got more than 4 responses")
        check(call.code() == grpc.StatusCode.OK, "status %s, want OK" % call.code())
    finally:
        pipe.close()
        call.cancel()  # no-op if the call already finished


def empty_stream(stub):
    call = stub.full_duplex_call(iter([]), timeout=CALL_TIMEOUT)
    responses = list(call)
    check(not responses, "got %d responses, want 0" % len(responses))
    check(call.code() == grpc.StatusCode.OK, "status %s, want OK" % call.code())


def custom_metadata(stub):
    response, call = stub.unary_call.with_call(
        m.SimpleRequest(response_size=314159, payload=payload(271828)),
        metadata=ECHO_METADATA, timeout=CALL_TIMEOUT)
    check_payload(response, 314159, "UnaryCall response")
    check_echo_metadata(call, "UnaryCall")

    request = m.StreamingOutputCallRequest(response_parameters=[m.ResponseParameters(size=314159)],
                                           payload=payload(271828))
    call = stub.full_duplex_call(iter([request]), metadata=ECHO_METADATA, timeout=CALL_TIMEOUT)
    responses = list(call)
    check(len(responses) == 1, "FullDuplexCall: got %d responses, want 1" % len(responses))
    check_payload(responses[0], 314159, "FullDuplexCall response")
    check_echo_metadata(call, "FullDuplexCall")


def status_code_and_message(stub):
    status = m.EchoStatus(code=2, message="test status message")
    expect_status(lambda: stub.unary_call(m.SimpleRequest(response_status=status),
                                          timeout=CALL_TIMEOUT),
                  grpc.StatusCode.UNKNOWN, status.message)
    request = m.StreamingOutputCallRequest(response_status=status)
    expect_status(lambda: list(stub.full_duplex_call(iter([request]), timeout=CALL_TIMEOUT)),
                  grpc.StatusCode.UNKNOWN, status.message)


def special_status_message(stub):
    status = m.EchoStatus(code=2, message=SPECIAL_STATUS_MESSAGE)
    expect_status(lambda: stub.unary_call(m.SimpleRequest(response_status=status),
                                          timeout=CALL_TIMEOUT),
                  grpc.StatusCode.UNKNOWN, SPECIAL_STATUS_MESSAGE)


def unimplemented_method(stub):
    expect_status(lambda: stub.unimplemented_method(empty_pb2.Empty(), timeout=CALL_TIMEOUT),
                  grpc.StatusCode.UNIMPLEMENTED)


def unimplemented_service(stub):
    expect_status(lambda: stub.unimplemented_service(empty_pb2.Empty(), timeout=CALL_TIMEOUT),
                  grpc.StatusCode.UNIMPLEMENTED)


def cancel_after_begin(stub):
    # Start the call (its headers go out) with a request stream that has not
    # produced anything yet, then cancel.
    release = threading.Event()

    def no_requests_yet():
        release.wait(CALL_TIMEOUT)
        return
        yield  # makes this a generator

    future = stub.streaming_input_call.future(no_requests_yet(), timeout=CALL_TIMEOUT)
    try:
        future.cancel()
        check(future.code() == grpc.StatusCode.CANCELLED,
              "status %s, want CANCELLED" % future.code())
    finally:
        release.set()


def cancel_after_first_response(stub):
    pipe = RequestPipe()
    call = stub.full_duplex_call(iter(pipe), timeout=CALL_TIMEOUT)
    try:
        pipe.put(m.StreamingOutputCallRequest(response_parameters=[m.ResponseParameters(size=31415)],
                                              payload=payload(27182)))
        response = next(call, None)
        check(response is not None, "stream ended before the first response")
        check_payload(response, 31415)
        call.cancel()
        check(call.code() == grpc.StatusCode.CANCELLED, "status %s, want CANCELLED" % call.code())
    finally:
        pipe.close()
        call.cancel()


def timeout_on_sleeping_server(stub):
    # No half-close: the server just waits for more requests until the 1 ms deadline.
    pipe = RequestPipe()
    call = stub.full_duplex_call(iter(pipe), timeout=0.001)
    try:
        pipe.put(m.StreamingOutputCallRequest(payload=payload(27182)))
        try:
            for _ in call:
                pass
        except grpc.RpcError:
            pass
        check(call.code() == grpc.StatusCode.DEADLINE_EXCEEDED,
              "status %s, want DEADLINE_EXCEEDED" % call.code())
    finally:
        pipe.close()
        call.cancel()


CASES = {f.__name__: f for f in [
    empty_unary, large_unary, client_streaming, server_streaming, ping_pong, empty_stream,
    custom_metadata, status_code_and_message, special_status_message, unimplemented_method,
    unimplemented_service, cancel_after_begin, cancel_after_first_response,
    timeout_on_sleeping_server, client_compressed_unary, server_compressed_unary,
    client_compressed_streaming, server_compressed_streaming]}


# ---------------------------------------------------------------- driver

def parse_bool(text):
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError("expected true or false, got %r" % text)
    return value in ("true", "1", "yes")


# The gRPC project's public test CA, which signed server1.pem (src/Conduit/Interop/testdata/README.md).
TEST_CA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "Conduit", "Interop", "testdata", "ca.pem")


def make_channel(args):
    target = "%s:%d" % (args.server_host, args.server_port)
    options = [DISABLE_DECOMPRESSION]
    if args.server_host_override:
        options.append(("grpc.default_authority", args.server_host_override))
    if not args.use_tls:
        return grpc.insecure_channel(target, options=options)
    root = None
    ca_file = args.ca_file or (TEST_CA if args.use_test_ca else "")
    if ca_file:
        with open(ca_file, "rb") as f:
            root = f.read()
    if args.server_host_override:
        options.append(("grpc.ssl_target_name_override", args.server_host_override))
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=root),
                               options=options)


def run_case(name, args):
    """Run one case on a fresh channel; return None on pass, else the reason."""
    with make_channel(args) as channel:
        try:
            CASES[name](Stub(channel))
        except TestFailure as e:
            return str(e)
        except grpc.RpcError as e:
            return "unexpected RPC error: %s: %r" % (e.code(), e.details())
        except Exception as e:  # a bug in the peer under test must not look like a crash here
            return "unexpected %s: %s" % (type(e).__name__, e)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server_host", default="127.0.0.1")
    parser.add_argument("--server_port", type=int, required=True)
    parser.add_argument("--test_case", required=True, choices=["all"] + list(CASES))
    parser.add_argument("--use_tls", type=parse_bool, default=False)
    parser.add_argument("--server_host_override", default="",
                        help="TLS name and :authority to claim (default: --server_host)")
    parser.add_argument("--ca_file", default="", help="PEM root certificates for --use_tls")
    parser.add_argument("--use_test_ca", type=parse_bool, default=False,
                        help="trust the gRPC test CA (ca.pem), as the official interop clients do")
    args = parser.parse_args()

    names = list(CASES) if args.test_case == "all" else [args.test_case]
    failed = 0
    for name in names:
        start = time.monotonic()
        reason = run_case(name, args)
        if reason is None:
            print("PASS %s (%.2fs)" % (name, time.monotonic() - start), flush=True)
        else:
            failed += 1
            print("FAIL %s: %s" % (name, reason), file=sys.stderr, flush=True)
    if len(names) > 1:
        print("%d/%d passed" % (len(names) - failed, len(names)), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
