"""Per-message compression detection for grpcio (checked with grpcio 1.51).

grpcio does not expose a received message's Compressed-Flag, and grpc core
strips `grpc-encoding` from the metadata the application sees
(`context.invocation_metadata()` only shows e.g. user-agent). What works:
the grpc core channel/server argument `grpc.per_message_decompression=0`
("the application will see the compressed message") makes core hand over
the still-compressed bytes of every message whose Compressed-Flag is 1, while
messages sent with flag 0 arrive as plain protobuf. This works per message,
on both servers and client channels. The deserializers built here then
decompress such messages themselves and say whether they were compressed.

Because the `grpc-encoding` header is still hidden, the algorithm is worked out
from the bytes: gRPC's "gzip" is RFC 1952 and "deflate" is zlib (RFC 1950).
"""

import gzip
import zlib
from typing import Any, NamedTuple

# Pass in `options=[...]` of grpc.server(...) / grpc.insecure_channel(...).
DISABLE_DECOMPRESSION = ("grpc.per_message_decompression", 0)


class Received(NamedTuple):
    message: Any      # the parsed protobuf message
    compressed: bool  # whether it came with the Compressed-Flag set


def _decompress(data):
    # gzip magic 1f 8b. Can't be mistaken for protobuf: a protobuf message never
    # starts with 0x1f (that would be wire type 7, which doesn't exist).
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data), True
    # A zlib header (CM=8, header % 31 == 0) can also be the start of a valid
    # protobuf message, so count it as compressed only if the whole zlib stream
    # (with its Adler-32 checksum) decodes.
    if len(data) >= 2 and data[0] & 0x0F == 8 and data[0] >> 4 <= 7 \
            and ((data[0] << 8) | data[1]) % 31 == 0:
        try:
            return zlib.decompress(data), True
        except zlib.error:
            pass
    return data, False


def deserializer(message_cls):
    """request_deserializer/response_deserializer returning Received tuples.

    Use it only where DISABLE_DECOMPRESSION is set, or every message will look
    uncompressed.
    """
    def parse(data):
        body, compressed = _decompress(data)
        return Received(message_cls.FromString(body), compressed)
    return parse
