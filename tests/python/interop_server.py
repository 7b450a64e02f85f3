#!/usr/bin/python3
"""gRPC interop server: grpc.testing.TestService as described in grpc/grpc
doc/interop-test-descriptions.md ("Server" section), built on grpcio.

    /usr/bin/python3 interop_server.py --port 0 [--use_tls true --tls_cert cert.pem --tls_key key.pem]

Listens on 127.0.0.1 only, plaintext (h2c) or, with --use_tls true, TLS with the
given PEM certificate and key. When ready it prints exactly one line `PORT <n>`
to stdout. Exits cleanly on SIGTERM/SIGINT or when stdin reaches EOF (give it
--ignore_stdin to keep it running with stdin closed, e.g. `... &` in a shell).

UnimplementedMethod is deliberately not registered, so grpc answers it (and
everything else unknown) with UNIMPLEMENTED.
"""

import argparse
import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conduit_compression import DISABLE_DECOMPRESSION, deserializer  # noqa: E402
from conduit_protos import empty_pb2, messages_pb2 as m  # noqa: E402

SERVICE = "grpc.testing.TestService"
ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
STATUS_BY_CODE = {s.value[0]: s for s in grpc.StatusCode}


def _payload(response_type, size, context):
    if response_type != m.COMPRESSABLE:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      "unsupported response_type %d" % response_type)
    if size < 0:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "negative response size %d" % size)
    return m.Payload(type=m.COMPRESSABLE, body=bytes(size))


def _echo_trailing(context):
    # Trailing metadata set now also goes out if the call later ends in an error.
    value = dict(context.invocation_metadata()).get(ECHO_TRAILING)
    if value is not None:
        context.set_trailing_metadata(((ECHO_TRAILING, value),))


def _start(context, compress):
    """Choose call compression, then echo the initial metadata.

    Must run before the first response is sent: the call's encoding goes out
    in the response headers, so grpcio ignores set_compression() made later.
    """
    if compress:
        context.set_compression(grpc.Compression.Gzip)
    value = dict(context.invocation_metadata()).get(ECHO_INITIAL)
    if value is not None:
        context.send_initial_metadata(((ECHO_INITIAL, value),))


def _check_compressed(expect_compressed, compressed, context):
    # CompressedRequest feature: grpcio can tell (see conduit_compression.py),
    # so an uncompressed message with expect_compressed=true is rejected.
    if expect_compressed.value and not compressed:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      "expected a compressed request but it was not compressed")


def _echo_status(response_status, context):
    # Echo Status: end the call with the requested status; no further messages
    # of the stream are processed.
    if response_status.code != 0:
        code = STATUS_BY_CODE.get(response_status.code, grpc.StatusCode.UNKNOWN)
        context.abort(code, response_status.message)


def _responses(request, context, call_compressed):
    """One StreamingOutputCallResponse per ResponseParameters, in order."""
    for params in request.response_parameters:
        if params.interval_us > 0:  # sleep *before* each response
            time.sleep(params.interval_us / 1e6)
        if call_compressed and not params.compressed.value:
            context.disable_next_message_compression()  # clears the flag for this message
        yield m.StreamingOutputCallResponse(
            payload=_payload(request.response_type, params.size, context))


def _wants_compression(request):
    return any(p.compressed.value for p in request.response_parameters)


def empty_call(received, context):
    _echo_trailing(context)
    _start(context, False)
    return empty_pb2.Empty()


def unary_call(received, context):
    request, compressed = received
    _echo_trailing(context)
    _start(context, request.response_compressed.value)
    _check_compressed(request.expect_compressed, compressed, context)
    _echo_status(request.response_status, context)
    response = m.SimpleResponse(
        payload=_payload(request.response_type, request.response_size, context))
    if request.fill_server_id:
        response.server_id = "conduit-python-interop-server"
    # No authentication here, so fill_username/fill_oauth_scope leave them empty.
    return response


def streaming_output_call(received, context):
    request, _ = received
    _echo_trailing(context)
    compress = _wants_compression(request)
    _start(context, compress)
    _echo_status(request.response_status, context)
    yield from _responses(request, context, compress)


def streaming_input_call(request_iterator, context):
    _echo_trailing(context)
    _start(context, False)
    total = 0
    for request, compressed in request_iterator:
        _check_compressed(request.expect_compressed, compressed, context)
        total += len(request.payload.body)
    return m.StreamingInputCallResponse(aggregated_payload_size=total)


def full_duplex_call(request_iterator, context):
    _echo_trailing(context)
    started = compress = False
    for request, _ in request_iterator:
        if not started:
            # Call-level compression is fixed when the first response goes out,
            # so it is decided by the first request. A later request asking for
            # compressed responses on a call that started uncompressed gets
            # uncompressed ones (grpcio can't compress just some messages then).
            compress = _wants_compression(request)
            _start(context, compress)
            started = True
        _echo_status(request.response_status, context)
        yield from _responses(request, context, compress)
    if not started:
        _start(context, False)


def half_duplex_call(request_iterator, context):
    # Buffer everything until the client half-closes, then answer in order.
    _echo_trailing(context)
    requests = []
    for request, _ in request_iterator:
        if request.response_status.code != 0:
            _start(context, False)  # still echo the initial metadata
            _echo_status(request.response_status, context)
        requests.append(request)
    compress = any(_wants_compression(r) for r in requests)
    _start(context, compress)
    for request in requests:
        yield from _responses(request, context, compress)


def _handler():
    def h(kind, fn, req_cls, resp_cls):
        return kind(fn, request_deserializer=deserializer(req_cls),
                    response_serializer=resp_cls.SerializeToString)
    uu, us = grpc.unary_unary_rpc_method_handler, grpc.unary_stream_rpc_method_handler
    su, ss = grpc.stream_unary_rpc_method_handler, grpc.stream_stream_rpc_method_handler
    Req, Resp = m.StreamingOutputCallRequest, m.StreamingOutputCallResponse
    return grpc.method_handlers_generic_handler(SERVICE, {
        "EmptyCall": h(uu, empty_call, empty_pb2.Empty, empty_pb2.Empty),
        "UnaryCall": h(uu, unary_call, m.SimpleRequest, m.SimpleResponse),
        "StreamingOutputCall": h(us, streaming_output_call, Req, Resp),
        "StreamingInputCall": h(su, streaming_input_call,
                                m.StreamingInputCallRequest, m.StreamingInputCallResponse),
        "FullDuplexCall": h(ss, full_duplex_call, Req, Resp),
        "HalfDuplexCall": h(ss, half_duplex_call, Req, Resp),
        # "UnimplementedMethod": intentionally absent -> UNIMPLEMENTED.
    })


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--ignore_stdin", action="store_true",
                        help="do not exit when stdin reaches EOF")
    parser.add_argument("--use_tls", default="false", choices=("true", "false"),
                        help="serve TLS (needs --tls_cert and --tls_key)")
    parser.add_argument("--tls_cert", help="PEM certificate (chain) for --use_tls true")
    parser.add_argument("--tls_key", help="PEM private key for --use_tls true")
    args = parser.parse_args()
    use_tls = args.use_tls == "true"
    if use_tls and not (args.tls_cert and args.tls_key):
        parser.error("--use_tls true needs --tls_cert and --tls_key")

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64),  # each streaming call holds a thread
        options=[DISABLE_DECOMPRESSION,
                 ("grpc.so_reuseport", 0)])  # a port clash must fail, not share the port
    server.add_generic_rpc_handlers((_handler(),))
    address = "127.0.0.1:%d" % args.port
    try:
        if use_tls:
            with open(args.tls_key, "rb") as key, open(args.tls_cert, "rb") as cert:
                credentials = grpc.ssl_server_credentials(((key.read(), cert.read()),))
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as e:
        port, error = 0, e
    else:
        error = "add_%s_port returned 0" % ("secure" if use_tls else "insecure")
    if port == 0:
        print("cannot listen on 127.0.0.1:%d: %s" % (args.port, error), file=sys.stderr)
        return 1
    server.start()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if not args.ignore_stdin:
        def watch_stdin():
            # os.read on the raw fd: a thread blocked in sys.stdin.buffer.read()
            # holds the buffer's lock and makes interpreter shutdown abort.
            while os.read(sys.stdin.fileno(), 65536):
                pass
            stop.set()
        threading.Thread(target=watch_stdin, daemon=True).start()

    print("PORT %d" % port, flush=True)
    while not stop.wait(0.5):
        pass
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
