using Conduit.Protos.Grpc.Testing;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Grpc.Tests;

/// <summary>
/// Hand-framed requests to an in-process server, asserting exactly what it answers on the wire
/// (HTTP status, headers, trailers) for the protocol's edge cases.
/// </summary>
public class ServerProtocolTests : IAsyncLifetime
{
    private const string UnaryCall = "/grpc.testing.TestService/UnaryCall";
    private TestHost _host = null!;

    public async Task InitializeAsync() => _host = await TestHost.StartAsync(
        services => services.AddSingleton<ThrowingTestService>(),
        app => app.MapGrpcService<ThrowingTestService>());

    public async Task DisposeAsync() => await _host.DisposeAsync();

    [Fact]
    public async Task A_good_call_has_headers_one_message_and_status_trailers()
    {
        var response = await _host.PostAsync(UnaryCall, new ByteArrayContent(TestHost.Frame(new SimpleRequest { ResponseSize = 3 })));
        Assert.Equal(200, response.HttpStatus);
        Assert.Equal("application/grpc", response.Headers["content-type"]);
        // grpc-dotnet advertises grpc-accept-encoding only when it refuses an encoding (the header
        // is optional in PROTOCOL-HTTP2.md; the old runtime sent it on every response).
        Assert.Equal("0", response.Trailers["grpc-status"]);
        Assert.False(response.Headers.ContainsKey("grpc-status"));
        var reply = SimpleResponse.Parser.ParseFrom(response.Body.AsSpan(5));
        Assert.Equal(3, reply.Payload.Body.Length);
    }

    [Fact]
    public async Task Messages_split_across_many_http2_data_frames_are_reassembled()
    {
        var request = new SimpleRequest { ResponseSize = 7, Payload = new Payload { Body = ByteString.CopyFrom(new byte[3000]) } };
        var response = await _host.PostAsync(UnaryCall, new TricklingContent(TestHost.Frame(request), chunk: 7));
        Assert.Equal("0", response.GrpcStatus);
        Assert.Equal(7, SimpleResponse.Parser.ParseFrom(response.Body.AsSpan(5)).Payload.Body.Length);
    }

    /// <summary>Sends its bytes a few at a time, flushing each piece into its own DATA frame.</summary>
    private sealed class TricklingContent(byte[] bytes, int chunk) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context)
        {
            for (var i = 0; i < bytes.Length; i += chunk)
            {
                await stream.WriteAsync(bytes.AsMemory(i, Math.Min(chunk, bytes.Length - i)));
                await stream.FlushAsync();
            }
        }

        protected override bool TryComputeLength(out long length)
        {
            length = -1;
            return false;
        }
    }

    [Fact]
    public async Task Wrong_content_type_is_415_with_a_grpc_status()
    {
        var response = await _host.PostAsync(UnaryCall, new ByteArrayContent(TestHost.Frame(new SimpleRequest())), contentType: "application/json");
        Assert.Equal(415, response.HttpStatus);
        Assert.Equal("13", response.GrpcStatus);
    }

    [Theory]
    [InlineData("/grpc.testing.NoSuchService/Call", "Service is unimplemented.")]
    [InlineData("/grpc.testing.TestService/NoSuchMethod", "Method is unimplemented.")]
    public async Task Unknown_service_or_method_is_unimplemented_trailers_only(string path, string message)
    {
        var response = await _host.PostAsync(path, new ByteArrayContent(TestHost.Frame([])));
        Assert.Equal(200, response.HttpStatus);
        Assert.True(response.TrailersOnly);
        Assert.Equal("12", response.GrpcStatus);
        Assert.Equal(message, response.GrpcMessage);
    }

    [Fact]
    public async Task A_method_the_implementation_does_not_override_is_unimplemented()
    {
        var response = await _host.PostAsync("/grpc.testing.TestService/UnimplementedMethod", new ByteArrayContent(TestHost.Frame([])));
        Assert.Equal("12", response.GrpcStatus);
    }

    [Theory]
    [InlineData("1x")]
    [InlineData("123456789S")]
    [InlineData("-5m")]
    public async Task Malformed_grpc_timeout_is_ignored(string timeout)
    {
        // grpc-dotnet logs a malformed grpc-timeout and runs the call without a deadline (the old
        // runtime refused it with INTERNAL; PROTOCOL-HTTP2.md does not say which).
        var response = await _host.PostAsync(UnaryCall, new ByteArrayContent(TestHost.Frame(new SimpleRequest { ResponseSize = 1 })), headers: ("grpc-timeout", timeout));
        Assert.Equal("0", response.GrpcStatus);
        Assert.Equal(1, SimpleResponse.Parser.ParseFrom(response.Body.AsSpan(5)).Payload.Body.Length);
    }

    [Fact]
    public async Task Unknown_grpc_encoding_is_unimplemented_and_lists_what_is_supported()
    {
        var response = await _host.PostAsync(UnaryCall, new ByteArrayContent(TestHost.Frame(new SimpleRequest(), compressedFlag: true)), headers: ("grpc-encoding", "snappy"));
        Assert.Equal("12", response.GrpcStatus);
        Assert.Equal("identity,gzip,deflate", response.Headers["grpc-accept-encoding"]);
    }

    [Fact]
    public async Task Malformed_message_is_invalid_argument()
    {
        // grpc-dotnet alone treats a request it cannot parse like a handler exception (UNKNOWN;
        // grpc C-core and grpc-go answer INTERNAL); the bytes are the client's error, so
        // StrictParsing answers INVALID_ARGUMENT: a truncated field, and a string (EchoStatus.message) that is not UTF-8.
        var response = await _host.PostAsync(UnaryCall, new ByteArrayContent(TestHost.Frame([0x0a, 0x05, 0x01])));
        Assert.Equal("3", response.GrpcStatus);
        response = await _host.PostAsync(UnaryCall, new ByteArrayContent(TestHost.Frame([0x3a, 0x04, 0x12, 0x02, (byte)'k', 0xff])));
        Assert.Equal("3", response.GrpcStatus);
    }

    [Fact]
    public async Task Request_larger_than_the_receive_limit_is_resource_exhausted()
    {
        var request = new SimpleRequest { Payload = new Payload { Body = ByteString.CopyFrom(new byte[5 * 1024 * 1024]) } };
        var response = await _host.PostAsync(UnaryCall, new ByteArrayContent(TestHost.Frame(request)));
        Assert.Equal("8", response.GrpcStatus);
    }

    [Fact]
    public async Task A_unary_request_without_a_message_is_internal()
    {
        var response = await _host.PostAsync(UnaryCall, new ByteArrayContent([]));
        Assert.Equal("13", response.GrpcStatus);
    }

    [Fact]
    public async Task A_throwing_handler_is_unknown_without_a_stack_trace()
    {
        var response = await _host.PostAsync("/grpc.testing.TestService/EmptyCall", new ByteArrayContent(TestHost.Frame([])));
        Assert.True(response.TrailersOnly);
        Assert.Equal("2", response.GrpcStatus);
        Assert.Equal("Exception was thrown by handler.", response.GrpcMessage);
        Assert.DoesNotContain("secret", string.Join(" ", response.Headers.Values));
    }

    [Fact]
    public async Task Status_message_and_rich_details_travel_in_the_trailers()
    {
        var request = new SimpleRequest { ResponseStatus = new EchoStatus { Code = 3, Message = "bad ☺" } };
        var response = await _host.PostAsync(UnaryCall, new ByteArrayContent(TestHost.Frame(request)));
        Assert.Equal("3", response.GrpcStatus);
        Assert.Equal("bad %E2%98%BA", response.GrpcMessage);
        var details = Google.Rpc.Status.Parser.ParseFrom(TestHost.FromBase64(response.Headers["grpc-status-details-bin"]));
        Assert.Equal(3, details.Code);
        Assert.True(details.Details[0].TryUnpack<Google.Rpc.BadRequest>(out var badRequest));
        Assert.Equal("response_status", badRequest.FieldViolations[0].Field);
    }

    [Fact]
    public async Task Http1_requests_are_refused()
    {
        using var http = new HttpClient();
        using var content = new ByteArrayContent(TestHost.Frame(new SimpleRequest()));
        content.Headers.TryAddWithoutValidation("content-type", "application/grpc");
        // The h2c endpoint only speaks HTTP/2 (prior knowledge): HTTP/1.1 never becomes a call.
        using var response = await http.PostAsync(_host.Address + UnaryCall, content);
        Assert.Equal(System.Net.HttpStatusCode.BadRequest, response.StatusCode);
        Assert.False(response.Headers.Contains("grpc-status"));
    }

    /// <summary>TestService whose EmptyCall throws, and whose UnaryCall answers with rich details.</summary>
    private sealed class ThrowingTestService : TestService.TestServiceBase
    {
        public override Task<Empty> EmptyCall(Empty request, ServerCallContext context) =>
            throw new InvalidOperationException("secret internal state");

        public override Task<SimpleResponse> UnaryCall(SimpleRequest request, ServerCallContext context)
        {
            if (request.ResponseStatus is { Code: not 0 } status)
            {
                throw RpcException.WithDetails((StatusCode)status.Code, status.Message, Details.BadRequest(("response_status", "asked for")));
            }
            return Task.FromResult(new SimpleResponse { Payload = new Payload { Body = ByteString.CopyFrom(new byte[request.ResponseSize]) } });
        }
    }
}
