using Conduit.Protos.Grpc.Testing;
using Conduit.Rpc;
using Conduit.Rpc.Server;
using Google.Protobuf;

namespace Conduit.Interop;

/// <summary>
/// grpc.testing.TestService as grpc/grpc doc/interop-test-descriptions.md describes the server:
/// the peer every gRPC implementation's interop client runs against.
/// </summary>
public sealed class TestServiceImpl : TestService.TestServiceBase
{
    public const string EchoInitialKey = "x-grpc-test-echo-initial";
    public const string EchoTrailingKey = "x-grpc-test-echo-trailing-bin";

    public override Task<Empty> EmptyCall(Empty request, ServerCallContext context) => Task.FromResult(new Empty());

    public override async Task<SimpleResponse> UnaryCall(SimpleRequest request, ServerCallContext context)
    {
        if (request.ExpectCompressed?.Value == true && !context.LastRequestCompressed)
        {
            throw new RpcException(StatusCode.InvalidArgument, "Expected a compressed request message.");
        }
        if (request.ResponseCompressed?.Value == true) context.ResponseCompression = "gzip";
        await EchoMetadataAsync(context).ConfigureAwait(false);
        ThrowIfStatusRequested(request.ResponseStatus);
        return new SimpleResponse { Payload = CreatePayload(request.ResponseSize) };
    }

    public override async Task StreamingOutputCall(StreamingOutputCallRequest request, IServerStreamWriter<StreamingOutputCallResponse> responseStream, ServerCallContext context)
    {
        // Compression is a property of the call, chosen before the headers go out; each message
        // then opts out (WriteFlags.NoCompress) when its parameters say so.
        if (request.ResponseParameters.Any(p => p.Compressed?.Value == true)) context.ResponseCompression = "gzip";
        await EchoMetadataAsync(context).ConfigureAwait(false);
        await RespondAsync(request, responseStream, context).ConfigureAwait(false);
        ThrowIfStatusRequested(request.ResponseStatus);
    }

    public override async Task<StreamingInputCallResponse> StreamingInputCall(IAsyncStreamReader<StreamingInputCallRequest> requestStream, ServerCallContext context)
    {
        var total = 0;
        await foreach (var request in requestStream.WithCancellation(context.CancellationToken).ConfigureAwait(false))
        {
            if (request.ExpectCompressed?.Value == true && !context.LastRequestCompressed)
            {
                throw new RpcException(StatusCode.InvalidArgument, "Expected a compressed request message.");
            }
            total += request.Payload?.Body.Length ?? 0;
        }
        return new StreamingInputCallResponse { AggregatedPayloadSize = total };
    }

    public override async Task FullDuplexCall(IAsyncStreamReader<StreamingOutputCallRequest> requestStream, IServerStreamWriter<StreamingOutputCallResponse> responseStream, ServerCallContext context)
    {
        await EchoMetadataAsync(context).ConfigureAwait(false);
        await foreach (var request in requestStream.WithCancellation(context.CancellationToken).ConfigureAwait(false))
        {
            ThrowIfStatusRequested(request.ResponseStatus);
            await RespondAsync(request, responseStream, context).ConfigureAwait(false);
        }
    }

    public override async Task HalfDuplexCall(IAsyncStreamReader<StreamingOutputCallRequest> requestStream, IServerStreamWriter<StreamingOutputCallResponse> responseStream, ServerCallContext context)
    {
        var requests = new List<StreamingOutputCallRequest>();
        await foreach (var request in requestStream.WithCancellation(context.CancellationToken).ConfigureAwait(false))
        {
            requests.Add(request);
        }
        foreach (var request in requests)
        {
            ThrowIfStatusRequested(request.ResponseStatus);
            await RespondAsync(request, responseStream, context).ConfigureAwait(false);
        }
    }

    private static async Task RespondAsync(StreamingOutputCallRequest request, IServerStreamWriter<StreamingOutputCallResponse> responseStream, ServerCallContext context)
    {
        foreach (var parameters in request.ResponseParameters)
        {
            if (parameters.IntervalUs > 0)
            {
                await Task.Delay(TimeSpan.FromMicroseconds(parameters.IntervalUs), context.CancellationToken).ConfigureAwait(false);
            }
            responseStream.WriteFlags = parameters.Compressed?.Value == true ? WriteFlags.None : WriteFlags.NoCompress;
            await responseStream.WriteAsync(new StreamingOutputCallResponse { Payload = CreatePayload(parameters.Size) }).ConfigureAwait(false);
        }
    }

    private static async Task EchoMetadataAsync(ServerCallContext context)
    {
        if (context.RequestHeaders.GetValue(EchoInitialKey) is { } initial)
        {
            await context.WriteResponseHeadersAsync(new Metadata { { EchoInitialKey, initial } }).ConfigureAwait(false);
        }
        if (context.RequestHeaders.GetValueBytes(EchoTrailingKey) is { } trailing)
        {
            context.ResponseTrailers.Add(EchoTrailingKey, trailing);
        }
    }

    private static void ThrowIfStatusRequested(EchoStatus? status)
    {
        if (status is { Code: not 0 }) throw new RpcException((StatusCode)status.Code, status.Message);
    }

    private static Payload CreatePayload(int size) => new() { Body = ByteString.CopyFrom(new byte[size]) };
}
