using Google.Protobuf;
using Grpc.Core;

namespace Conduit.Grpc;

/// <summary>
/// A request message that does not parse (Google.Protobuf refuses invalid UTF-8 in a string
/// field, a truncated field, a wrong wire type) is the client's error: INVALID_ARGUMENT, not
/// UNKNOWN. This sees the messages of client-streaming and bidirectional calls, which a handler
/// reads itself; grpc-dotnet parses the one request of a unary or server-streaming call before any
/// interceptor runs, and answers UNKNOWN for it.
/// </summary>
public sealed class MalformedRequestMapper : IExceptionMapper
{
    public RpcException? Map(Exception exception, ServerCallContext context) => exception is InvalidProtocolBufferException malformed
        ? RpcException.WithDetails(StatusCode.InvalidArgument, $"A request message is malformed: {malformed.Message}",
            Details.ErrorInfo("MALFORMED_REQUEST", "grpc.conduit"))
        : null;
}
