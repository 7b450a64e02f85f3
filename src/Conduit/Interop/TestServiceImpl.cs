using Conduit.Grpc;
using Conduit.Protos.Grpc.Testing;
using Google.Protobuf;
using Grpc.Core;

namespace Conduit.Interop;

/// <summary>
/// grpc.testing.TestService as grpc/grpc doc/interop-test-descriptions.md describes the server:
/// the peer every gRPC implementation's interop client runs against. Map it with
/// <see cref="InteropServer.Map"/>.
/// </summary>
public sealed class TestServiceImpl : TestService.TestServiceBase
{
    public const string EchoInitialKey = "x-grpc-test-echo-initial";
    public const string EchoTrailingKey = "x-grpc-test-echo-trailing-bin";

    public override Task<Empty> EmptyCall(Empty request, ServerCallContext context) => Task.FromResult(new Empty());

    public override async Task<SimpleResponse> UnaryCall(SimpleRequest request, ServerCallContext context)
    {
        CheckCompressed(request.ExpectCompressed, context, index: 0);
        await EchoMetadataAsync(context, compressResponses: request.ResponseCompressed?.Value == true).ConfigureAwait(false);
        ThrowIfStatusRequested(request.ResponseStatus);
        return new SimpleResponse { Payload = CreatePayload(request.ResponseSize) };
    }

    public override async Task StreamingOutputCall(StreamingOutputCallRequest request, IServerStreamWriter<StreamingOutputCallResponse> responseStream, ServerCallContext context)
    {
        // Compression is a property of the call, chosen before the headers go out; each message
        // then opts out (WriteFlags.NoCompress) when its parameters say so.
        await EchoMetadataAsync(context, compressResponses: request.ResponseParameters.Any(p => p.Compressed?.Value == true)).ConfigureAwait(false);
        await RespondAsync(request, responseStream, context).ConfigureAwait(false);
        ThrowIfStatusRequested(request.ResponseStatus);
    }

    public override async Task<StreamingInputCallResponse> StreamingInputCall(IAsyncStreamReader<StreamingInputCallRequest> requestStream, ServerCallContext context)
    {
        var total = 0;
        var index = 0;
        await foreach (var request in requestStream.ReadAllAsync(context.CancellationToken).ConfigureAwait(false))
        {
            CheckCompressed(request.ExpectCompressed, context, index++);
            total += request.Payload?.Body.Length ?? 0;
        }
        return new StreamingInputCallResponse { AggregatedPayloadSize = total };
    }

    public override async Task FullDuplexCall(IAsyncStreamReader<StreamingOutputCallRequest> requestStream, IServerStreamWriter<StreamingOutputCallResponse> responseStream, ServerCallContext context)
    {
        await EchoMetadataAsync(context).ConfigureAwait(false);
        await foreach (var request in requestStream.ReadAllAsync(context.CancellationToken).ConfigureAwait(false))
        {
            ThrowIfStatusRequested(request.ResponseStatus);
            await RespondAsync(request, responseStream, context).ConfigureAwait(false);
        }
    }

    public override async Task HalfDuplexCall(IAsyncStreamReader<StreamingOutputCallRequest> requestStream, IServerStreamWriter<StreamingOutputCallResponse> responseStream, ServerCallContext context)
    {
        var requests = new List<StreamingOutputCallRequest>();
        await foreach (var request in requestStream.ReadAllAsync(context.CancellationToken).ConfigureAwait(false))
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
            responseStream.WriteOptions = parameters.Compressed?.Value == true ? WriteOptions.Default : NoCompress;
            await responseStream.WriteAsync(new StreamingOutputCallResponse { Payload = CreatePayload(parameters.Size) }).ConfigureAwait(false);
        }
    }

    private static readonly WriteOptions NoCompress = new(WriteFlags.NoCompress);

    /// <summary>
    /// A message that expects compression but came uncompressed is refused, as the spec asks
    /// (CompressedRequest), judged by that message's own compressed flag: see <see cref="InteropServer"/>.
    /// </summary>
    private static void CheckCompressed(BoolValue? expectCompressed, ServerCallContext context, int index)
    {
        if (expectCompressed?.Value != true) return;
        // InteropServer.Map records the flags of calls with a grpc-encoding; a call without one
        // has no compressed message.
        var flags = context.GetHttpContext().Features.Get<RequestFrameFlags>();
        if (flags is null || !flags.IsCompressed(index))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "Expected a compressed request message."));
        }
    }

    /// <summary>
    /// Echoes the initial metadata the client asked for; with <paramref name="compressResponses"/>
    /// the response headers also carry grpc-internal-encoding-request, grpc-dotnet's way of
    /// choosing a call's response compression (each message may still opt out). grpc-dotnet
    /// honours that header without looking at what the client accepts, so a client that does
    /// not list gzip in grpc-accept-encoding gets its responses uncompressed instead.
    /// </summary>
    private static async Task EchoMetadataAsync(ServerCallContext context, bool compressResponses = false)
    {
        var headers = new Metadata();
        if (context.RequestHeaders.GetValue(EchoInitialKey) is { } initial) headers.Add(EchoInitialKey, initial);
        if (compressResponses && AcceptsGzip(context)) headers.Add("grpc-internal-encoding-request", "gzip");
        if (headers.Count > 0) await context.WriteResponseHeadersAsync(headers).ConfigureAwait(false);
        if (context.RequestHeaders.GetValueBytes(EchoTrailingKey) is { } trailing)
        {
            context.ResponseTrailers.Add(EchoTrailingKey, trailing);
        }
    }

    private static bool AcceptsGzip(ServerCallContext context) =>
        context.GetHttpContext().Request.Headers["grpc-accept-encoding"].ToString()
            .Split(',', StringSplitOptions.TrimEntries).Contains("gzip", StringComparer.OrdinalIgnoreCase);

    private static void ThrowIfStatusRequested(EchoStatus? status)
    {
        if (status is { Code: not 0 }) throw new RpcException(new Status((StatusCode)status.Code, status.Message));
    }

    private static Payload CreatePayload(int size) => new() { Body = ByteString.CopyFrom(new byte[size]) };
}
