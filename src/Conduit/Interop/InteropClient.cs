using Conduit.Grpc;
using Conduit.Protos.Grpc.Testing;
using Google.Protobuf;
using Grpc.Core;

namespace Conduit.Interop;

/// <summary>A test case whose assertion failed.</summary>
public sealed class InteropFailure(string message) : Exception(message);

/// <summary>
/// The gRPC interop client: the test cases of grpc/grpc doc/interop-test-descriptions.md, each
/// asserting what the spec says the client must check.
/// </summary>
public sealed class InteropClient(ChannelBase channel, CompressionProbe? probe = null)
{
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(30);
    private readonly TestService.TestServiceClient _client = new(channel);

    /// <summary>
    /// A channel whose handler carries a <see cref="CompressionProbe"/>, so the compression cases
    /// also check each response message's compressed flag. <paramref name="handler"/> defaults to
    /// a plain SocketsHttpHandler (give one with TLS options for https).
    /// </summary>
    public static (global::Grpc.Net.Client.GrpcChannel Channel, CompressionProbe Probe) CreateChannel(string address, HttpMessageHandler? handler = null)
    {
        var probe = new CompressionProbe(handler ?? new SocketsHttpHandler { EnableMultipleHttp2Connections = true });
        return (ConduitChannel.ForAddress(address, o => o.HttpHandler = probe), probe);
    }

    public static IReadOnlyList<string> TestCases { get; } =
    [
        "empty_unary", "large_unary", "client_compressed_unary", "server_compressed_unary", "client_streaming",
        "client_compressed_streaming", "server_streaming", "server_compressed_streaming", "ping_pong", "empty_stream",
        "custom_metadata", "status_code_and_message", "special_status_message", "unimplemented_method",
        "unimplemented_service", "cancel_after_begin", "cancel_after_first_response", "timeout_on_sleeping_server",
    ];

    public Task RunAsync(string testCase) => testCase switch
    {
        "empty_unary" => EmptyUnary(),
        "large_unary" => LargeUnary(),
        "client_compressed_unary" => ClientCompressedUnary(),
        "server_compressed_unary" => ServerCompressedUnary(),
        "client_streaming" => ClientStreaming(),
        "client_compressed_streaming" => ClientCompressedStreaming(),
        "server_streaming" => ServerStreaming(),
        "server_compressed_streaming" => ServerCompressedStreaming(),
        "ping_pong" => PingPong(),
        "empty_stream" => EmptyStream(),
        "custom_metadata" => CustomMetadata(),
        "status_code_and_message" => StatusCodeAndMessage(),
        "special_status_message" => SpecialStatusMessage(),
        "unimplemented_method" => UnimplementedMethod(),
        "unimplemented_service" => UnimplementedService(),
        "cancel_after_begin" => CancelAfterBegin(),
        "cancel_after_first_response" => CancelAfterFirstResponse(),
        "timeout_on_sleeping_server" => TimeoutOnSleepingServer(),
        _ => throw new ArgumentException($"Unknown test case '{testCase}'. Known: {string.Join(", ", TestCases)}"),
    };

    private static CallOptions Options(Metadata? headers = null, string? compression = null, CancellationToken token = default) =>
        new(WithCompression(headers, compression), DateTime.UtcNow + CallTimeout, token);

    /// <summary>grpc-dotnet compresses a call's request messages when its metadata names the algorithm so.</summary>
    private static Metadata? WithCompression(Metadata? headers, string? compression)
    {
        if (compression is null) return headers;
        headers ??= [];
        headers.Add("grpc-internal-encoding-request", compression);
        return headers;
    }

    private async Task EmptyUnary()
    {
        var response = await _client.EmptyCallAsync(new Empty(), Options());
        Check(response is not null, "EmptyCall returned no message");
    }

    private async Task LargeUnary()
    {
        var response = await _client.UnaryCallAsync(new SimpleRequest { ResponseSize = 314159, Payload = Zeros(271828) }, Options());
        CheckPayload(response.Payload, 314159);
    }

    private async Task ClientCompressedUnary()
    {
        // Feature probe: an uncompressed request that claims to expect compression must be refused.
        var probe = await Assert(StatusCode.InvalidArgument, () => _client.UnaryCallAsync(new SimpleRequest
        {
            ExpectCompressed = new BoolValue { Value = true }, ResponseSize = 314159, Payload = Zeros(271828),
        }, Options()).ResponseAsync);
        _ = probe;
        var compressed = await _client.UnaryCallAsync(new SimpleRequest
        {
            ExpectCompressed = new BoolValue { Value = true }, ResponseSize = 314159, Payload = Zeros(271828),
        }, Options(compression: "gzip"));
        CheckPayload(compressed.Payload, 314159);
        var uncompressed = await _client.UnaryCallAsync(new SimpleRequest
        {
            ExpectCompressed = new BoolValue { Value = false }, ResponseSize = 314159, Payload = Zeros(271828),
        }, Options());
        CheckPayload(uncompressed.Payload, 314159);
    }

    private async Task ServerCompressedUnary()
    {
        foreach (var compress in new[] { true, false })
        {
            probe?.Reset();
            var response = await _client.UnaryCallAsync(new SimpleRequest
            {
                ResponseCompressed = new BoolValue { Value = compress }, ResponseSize = 314159, Payload = Zeros(271828),
            }, Options());
            CheckPayload(response.Payload, 314159);
            CheckCompressedFlags([compress]);
        }
    }

    /// <summary>With a probe, the response frames' compressed flags must be exactly these.</summary>
    private void CheckCompressedFlags(bool[] expected)
    {
        if (probe is null) return;
        var flags = probe.Flags;
        Check(flags.SequenceEqual(expected), $"response compressed flags [{string.Join(",", flags)}], expected [{string.Join(",", expected)}]");
    }

    private async Task ClientStreaming()
    {
        using var call = _client.StreamingInputCall(Options());
        foreach (var size in new[] { 27182, 8, 1828, 45904 })
        {
            await call.RequestStream.WriteAsync(new StreamingInputCallRequest { Payload = Zeros(size) });
        }
        await call.RequestStream.CompleteAsync();
        var response = await call;
        Check(response.AggregatedPayloadSize == 74922, $"aggregated size {response.AggregatedPayloadSize}, expected 74922");
    }

    private async Task ClientCompressedStreaming()
    {
        using (var probe = _client.StreamingInputCall(Options()))
        {
            await Assert(StatusCode.InvalidArgument, async () =>
            {
                await probe.RequestStream.WriteAsync(new StreamingInputCallRequest { ExpectCompressed = new BoolValue { Value = true }, Payload = Zeros(27182) });
                await probe.RequestStream.CompleteAsync();
                return await probe.ResponseAsync;
            });
        }
        using var call = _client.StreamingInputCall(Options(compression: "gzip"));
        await call.RequestStream.WriteAsync(new StreamingInputCallRequest { ExpectCompressed = new BoolValue { Value = true }, Payload = Zeros(27182) });
        call.RequestStream.WriteOptions = new WriteOptions(WriteFlags.NoCompress);
        await call.RequestStream.WriteAsync(new StreamingInputCallRequest { ExpectCompressed = new BoolValue { Value = false }, Payload = Zeros(45904) });
        await call.RequestStream.CompleteAsync();
        var response = await call;
        Check(response.AggregatedPayloadSize == 73086, $"aggregated size {response.AggregatedPayloadSize}, expected 73086");
    }

    private async Task ServerStreaming()
    {
        var sizes = new[] { 31415, 9, 2653, 58979 };
        var request = new StreamingOutputCallRequest();
        request.ResponseParameters.AddRange(sizes.Select(s => new ResponseParameters { Size = s }));
        await CheckStream(_client.StreamingOutputCall(request, Options()), sizes);
    }

    private async Task ServerCompressedStreaming()
    {
        var request = new StreamingOutputCallRequest();
        request.ResponseParameters.Add(new ResponseParameters { Compressed = new BoolValue { Value = true }, Size = 31415 });
        request.ResponseParameters.Add(new ResponseParameters { Compressed = new BoolValue { Value = false }, Size = 92653 });
        probe?.Reset();
        await CheckStream(_client.StreamingOutputCall(request, Options()), [31415, 92653]);
        CheckCompressedFlags([true, false]);
    }

    private static async Task CheckStream(AsyncServerStreamingCall<StreamingOutputCallResponse> call, int[] sizes)
    {
        using (call)
        {
            var received = new List<int>();
            await foreach (var response in call.ResponseStream.ReadAllAsync())
            {
                received.Add(response.Payload.Body.Length);
            }
            Check(received.SequenceEqual(sizes), $"response sizes [{string.Join(",", received)}], expected [{string.Join(",", sizes)}]");
            Check(call.GetStatus().StatusCode == StatusCode.OK, $"status {call.GetStatus()}");
        }
    }

    private async Task PingPong()
    {
        using var call = _client.FullDuplexCall(Options());
        foreach (var (responseSize, payloadSize) in new[] { (31415, 27182), (9, 8), (2653, 1828), (58979, 45904) })
        {
            var request = new StreamingOutputCallRequest { Payload = Zeros(payloadSize) };
            request.ResponseParameters.Add(new ResponseParameters { Size = responseSize });
            await call.RequestStream.WriteAsync(request);
            Check(await call.ResponseStream.MoveNext(), "the response stream ended early");
            CheckPayload(call.ResponseStream.Current.Payload, responseSize);
        }
        await call.RequestStream.CompleteAsync();
        Check(!await call.ResponseStream.MoveNext(), "more responses than requests");
    }

    private async Task EmptyStream()
    {
        using var call = _client.FullDuplexCall(Options());
        await call.RequestStream.CompleteAsync();
        Check(!await call.ResponseStream.MoveNext(), "responses to an empty stream");
    }

    private async Task CustomMetadata()
    {
        const string initialValue = "test_initial_metadata_value";
        byte[] trailingValue = [0xab, 0xab, 0xab];
        var headers = new Metadata { { TestServiceImpl.EchoInitialKey, initialValue }, { TestServiceImpl.EchoTrailingKey, trailingValue } };

        using (var unary = _client.UnaryCallAsync(new SimpleRequest { ResponseSize = 314159, Payload = Zeros(271828) }, Options(headers)))
        {
            CheckPayload((await unary).Payload, 314159);
            CheckEcho(await unary.ResponseHeadersAsync, unary.GetTrailers(), initialValue, trailingValue);
        }

        using var duplex = _client.FullDuplexCall(Options(headers));
        var request = new StreamingOutputCallRequest { Payload = Zeros(271828) };
        request.ResponseParameters.Add(new ResponseParameters { Size = 314159 });
        await duplex.RequestStream.WriteAsync(request);
        await duplex.RequestStream.CompleteAsync();
        Check(await duplex.ResponseStream.MoveNext(), "no response");
        CheckPayload(duplex.ResponseStream.Current.Payload, 314159);
        Check(!await duplex.ResponseStream.MoveNext(), "more than one response");
        CheckEcho(await duplex.ResponseHeadersAsync, duplex.GetTrailers(), initialValue, trailingValue);
    }

    private static void CheckEcho(Metadata headers, Metadata trailers, string initial, byte[] trailing)
    {
        Check(headers.GetValue(TestServiceImpl.EchoInitialKey) == initial, $"initial metadata echo: {headers}");
        Check(trailers.GetValueBytes(TestServiceImpl.EchoTrailingKey)?.SequenceEqual(trailing) == true, $"trailing metadata echo: {trailers}");
    }

    private async Task StatusCodeAndMessage()
    {
        const string message = "test status message";
        var status = new EchoStatus { Code = 2, Message = message };
        var unary = await Assert(StatusCode.Unknown, () => _client.UnaryCallAsync(new SimpleRequest { ResponseStatus = status }, Options()).ResponseAsync);
        Check(unary.Status.Detail == message, $"unary message '{unary.Status.Detail}'");

        using var duplex = _client.FullDuplexCall(Options());
        await duplex.RequestStream.WriteAsync(new StreamingOutputCallRequest { ResponseStatus = status });
        await duplex.RequestStream.CompleteAsync();
        var streaming = await Assert(StatusCode.Unknown, async () => await duplex.ResponseStream.MoveNext());
        Check(streaming.Status.Detail == message, $"streaming message '{streaming.Status.Detail}'");
    }

    private async Task SpecialStatusMessage()
    {
        const string message = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";
        var ex = await Assert(StatusCode.Unknown, () => _client.UnaryCallAsync(
            new SimpleRequest { ResponseStatus = new EchoStatus { Code = 2, Message = message } }, Options()).ResponseAsync);
        Check(ex.Status.Detail == message, $"message '{ex.Status.Detail}'");
    }

    private async Task UnimplementedMethod() =>
        await Assert(StatusCode.Unimplemented, () => _client.UnimplementedMethodAsync(new Empty(), Options()).ResponseAsync);

    private async Task UnimplementedService() =>
        await Assert(StatusCode.Unimplemented, () => new Protos.Grpc.Testing.UnimplementedService.UnimplementedServiceClient(channel)
            .UnimplementedCallAsync(new Empty(), Options()).ResponseAsync);

    private async Task CancelAfterBegin()
    {
        using var cts = new CancellationTokenSource();
        using var call = _client.StreamingInputCall(Options(token: cts.Token));
        await cts.CancelAsync();
        await Assert(StatusCode.Cancelled, () => call.ResponseAsync);
    }

    private async Task CancelAfterFirstResponse()
    {
        using var cts = new CancellationTokenSource();
        using var call = _client.FullDuplexCall(Options(token: cts.Token));
        var request = new StreamingOutputCallRequest { Payload = Zeros(27182) };
        request.ResponseParameters.Add(new ResponseParameters { Size = 31415 });
        await call.RequestStream.WriteAsync(request);
        Check(await call.ResponseStream.MoveNext(), "no first response");
        CheckPayload(call.ResponseStream.Current.Payload, 31415);
        await cts.CancelAsync();
        await Assert(StatusCode.Cancelled, async () => await call.ResponseStream.MoveNext());
    }

    private async Task TimeoutOnSleepingServer()
    {
        using var call = _client.FullDuplexCall(new CallOptions(deadline: DateTime.UtcNow.AddMilliseconds(1)));
        try
        {
            await call.RequestStream.WriteAsync(new StreamingOutputCallRequest { Payload = Zeros(27182) });
        }
        catch (Exception ex) when (ex is RpcException or InvalidOperationException or IOException)
        {
            // The deadline may pass before or during the write. grpc-dotnet then fails the write
            // with whatever stopped it: DEADLINE_EXCEEDED or CANCELLED, "the call is complete", or
            // the HTTP/2 stream reset by the server (an IOException). The spec asserts how the
            // call ended, which the response stream tells.
        }
        await Assert(StatusCode.DeadlineExceeded, async () => await call.ResponseStream.MoveNext());
        Check(call.GetStatus().StatusCode == StatusCode.DeadlineExceeded, $"call status {call.GetStatus()}");
    }

    private static async Task<RpcException> Assert<T>(StatusCode expected, Func<Task<T>> action)
    {
        try
        {
            await action();
        }
        catch (RpcException ex)
        {
            Check(ex.StatusCode == expected, $"expected {expected}, got {ex.Status}");
            return ex;
        }
        throw new InteropFailure($"expected {expected}, but the call succeeded");
    }

    private static Payload Zeros(int size) => new() { Body = ByteString.CopyFrom(new byte[size]) };

    private static void CheckPayload(Payload? payload, int size)
    {
        Check(payload is not null, "no payload");
        Check(payload!.Body.Length == size, $"payload of {payload.Body.Length} bytes, expected {size}");
        Check(payload.Body.Span.IndexOfAnyExcept((byte)0) < 0, "payload is not all zeros");
    }

    private static void Check(bool condition, string failure)
    {
        if (!condition) throw new InteropFailure(failure);
    }
}
