using Conduit.Interop;
using Conduit.Protos.Grpc.Testing;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Grpc.Tests;

/// <summary>gzip and deflate (zlib, RFC 1950) in both directions between a GrpcChannel and the server.</summary>
public class CompressionTests
{
    /// <summary>
    /// grpc-dotnet compresses a call's requests (client) or responses (server) when the metadata
    /// carries grpc-internal-encoding-request; a server never picks the request's encoding by itself.
    /// </summary>
    private static Metadata Compress(string encoding) => new() { { "grpc-internal-encoding-request", encoding } };

    [Theory]
    [InlineData("gzip")]
    [InlineData("deflate")]
    public async Task Compressed_requests_and_responses(string encoding)
    {
        await using var host = await TestHost.StartAsync(s => s.AddSingleton<EchoEncodingService>(), a => a.MapGrpcService<EchoEncodingService>());
        using var call = new TestService.TestServiceClient(host.Channel).UnaryCallAsync(new SimpleRequest
        {
            ExpectCompressed = new BoolValue { Value = true },
            ResponseSize = 100_000,
            Payload = new Payload { Body = ByteString.CopyFrom(new byte[100_000]) },
        }, new CallOptions(Compress(encoding)));
        var response = await call;
        Assert.Equal(100_000, response.Payload.Body.Length);
        Assert.Equal(encoding, response.Username); // what the server saw in grpc-encoding
        // grpc-dotnet hides grpc-encoding from ResponseHeadersAsync: the wire test below sees the compressed response.
    }

    [Fact]
    public async Task The_interop_service_accepts_a_compressed_request_that_expects_compression()
    {
        await using var host = await TestHost.StartAsync(s => s.AddSingleton<TestServiceImpl>(), InteropServer.Map);
        using var call = new TestService.TestServiceClient(host.Channel).UnaryCallAsync(new SimpleRequest
        {
            ExpectCompressed = new BoolValue { Value = true },
            ResponseCompressed = new BoolValue { Value = true },
            ResponseSize = 1000,
            Payload = new Payload { Body = ByteString.CopyFrom(new byte[1000]) },
        }, new CallOptions(Compress("deflate")));
        Assert.Equal(1000, (await call).Payload.Body.Length);
    }

    [Theory]
    [InlineData("gzip")]
    [InlineData("deflate")]
    public async Task On_the_wire_gzip_is_rfc_1952_and_deflate_is_zlib_rfc_1950(string encoding)
    {
        // Compressed and decompressed here by .NET's own streams, not by the providers under test.
        await using var host = await TestHost.StartAsync(s => s.AddSingleton<EchoEncodingService>(), a => a.MapGrpcService<EchoEncodingService>());
        var request = new SimpleRequest { ResponseSize = 5000, Payload = new Payload { Body = ByteString.CopyFrom(new byte[5000]) } };
        var raw = await host.PostAsync("/grpc.testing.TestService/UnaryCall", new ByteArrayContent(TestHost.Frame(Squeeze(request.ToByteArray(), encoding), compressedFlag: true)),
            headers: [("grpc-encoding", encoding), ("grpc-accept-encoding", "identity,gzip,deflate")]);
        Assert.Equal("0", raw.GrpcStatus);
        Assert.Equal(encoding, raw.Headers["grpc-encoding"]);
        Assert.Equal(1, raw.Body[0]);
        var response = SimpleResponse.Parser.ParseFrom(Expand(raw.Body[5..], encoding));
        Assert.Equal((5000, encoding), (response.Payload.Body.Length, response.Username));
    }

    [Fact]
    public async Task A_decompression_bomb_stops_at_the_receive_limit()
    {
        await using var host = await TestHost.StartAsync(s => s.AddSingleton<EchoEncodingService>(), a => a.MapGrpcService<EchoEncodingService>());
        var bomb = new SimpleRequest { Payload = new Payload { Body = ByteString.CopyFrom(new byte[5 * 1024 * 1024]) } };
        var frame = TestHost.Frame(Squeeze(bomb.ToByteArray(), "gzip"), compressedFlag: true);
        Assert.True(frame.Length < 100_000);
        var raw = await host.PostAsync("/grpc.testing.TestService/UnaryCall", new ByteArrayContent(frame), headers: ("grpc-encoding", "gzip"));
        Assert.Equal("8", raw.GrpcStatus);
    }

    [Fact]
    public async Task A_compressed_flag_without_an_encoding_is_internal()
    {
        await using var host = await TestHost.StartAsync(s => s.AddSingleton<EchoEncodingService>(), a => a.MapGrpcService<EchoEncodingService>());
        var raw = await host.PostAsync("/grpc.testing.TestService/UnaryCall", new ByteArrayContent(TestHost.Frame(new SimpleRequest(), compressedFlag: true)));
        Assert.Equal("13", raw.GrpcStatus);
    }

    private static byte[] Squeeze(byte[] data, string encoding)
    {
        using var output = new MemoryStream();
        using (Stream compressor = encoding == "gzip"
            ? new System.IO.Compression.GZipStream(output, System.IO.Compression.CompressionLevel.Optimal, leaveOpen: true)
            : new System.IO.Compression.ZLibStream(output, System.IO.Compression.CompressionLevel.Optimal, leaveOpen: true))
        {
            compressor.Write(data);
        }
        return output.ToArray();
    }

    private static byte[] Expand(byte[] data, string encoding)
    {
        using var input = new MemoryStream(data);
        using Stream decompressor = encoding == "gzip"
            ? new System.IO.Compression.GZipStream(input, System.IO.Compression.CompressionMode.Decompress)
            : new System.IO.Compression.ZLibStream(input, System.IO.Compression.CompressionMode.Decompress);
        using var output = new MemoryStream();
        decompressor.CopyTo(output);
        return output.ToArray();
    }

    /// <summary>Answers in the encoding the request came in, and says which that was (in username).</summary>
    public sealed class EchoEncodingService : TestService.TestServiceBase
    {
        public override async Task<SimpleResponse> UnaryCall(SimpleRequest request, ServerCallContext context)
        {
            // grpc-dotnet leaves grpc-* headers out of RequestHeaders: the request's own header.
            var encoding = context.GetHttpContext().Request.Headers["grpc-encoding"].FirstOrDefault() ?? "identity";
            if (request.ExpectCompressed?.Value == true && encoding == "identity")
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument, "Expected a compressed request message."));
            }
            if (encoding != "identity") await context.WriteResponseHeadersAsync(new Metadata { { "grpc-internal-encoding-request", encoding } });
            return new SimpleResponse { Username = encoding, Payload = new Payload { Body = ByteString.CopyFrom(new byte[request.ResponseSize]) } };
        }
    }
}
