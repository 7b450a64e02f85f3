using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;
using Conduit.Hosting;
using Google.Protobuf;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Conduit.Grpc.Tests;

/// <summary>An in-process Conduit server (see <see cref="InProcessServer"/>) with raw HTTP/2 helpers.</summary>
public sealed class TestHost(InProcessServer server) : InProcessServer(server)
{
    public static async Task<TestHost> StartAsync(Action<IServiceCollection>? services = null, Action<WebApplication>? map = null, ServeOptions? options = null, Action<GrpcChannelOptions>? channelOptions = null, LogLevel logLevel = LogLevel.Warning, IConfiguration? configuration = null) =>
        new(await InProcessServer.StartAsync(services, map, options, configuration, channelOptions, logLevel));

    /// <summary>A raw HTTP/2 exchange, to see exactly what the server puts on the wire.</summary>
    public async Task<RawResponse> PostAsync(string path, HttpContent? content, string? contentType = "application/grpc", params (string Name, string Value)[] headers)
    {
        using var http = new HttpClient(new SocketsHttpHandler()) { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact };
        using var request = new HttpRequestMessage(HttpMethod.Post, Address + path) { Content = content ?? new ByteArrayContent([]), Version = HttpVersion.Version20, VersionPolicy = HttpVersionPolicy.RequestVersionExact };
        request.Content.Headers.ContentType = null;
        if (contentType is not null) request.Content.Headers.TryAddWithoutValidation("content-type", contentType);
        request.Headers.TryAddWithoutValidation("te", "trailers");
        foreach (var (name, value) in headers) request.Headers.TryAddWithoutValidation(name, value);
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        var body = await response.Content.ReadAsByteArrayAsync();
        return new RawResponse((int)response.StatusCode, Flatten(response.Headers, response.Content.Headers), body, Flatten(response.TrailingHeaders));
    }

    public static byte[] Frame(IMessage message, bool compressedFlag = false) => Frame(message.ToByteArray(), compressedFlag);

    public static byte[] Frame(byte[] payload, bool compressedFlag = false)
    {
        var frame = new byte[5 + payload.Length];
        frame[0] = compressedFlag ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), (uint)payload.Length);
        payload.CopyTo(frame, 5);
        return frame;
    }

    /// <summary>One HTTP/2 frame: the 9-byte header, then <paramref name="payload"/>.</summary>
    public static byte[] Http2Frame(byte type, byte flags, int stream, ReadOnlySpan<byte> payload)
    {
        var frame = new byte[9 + payload.Length];
        frame[0] = (byte)(payload.Length >> 16);
        frame[1] = (byte)(payload.Length >> 8);
        frame[2] = (byte)payload.Length;
        frame[3] = type;
        frame[4] = flags;
        BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(5), stream);
        payload.CopyTo(frame.AsSpan(9));
        return frame;
    }

    /// <summary>A -bin header value: base64 with or without padding (PROTOCOL-HTTP2.md accepts both).</summary>
    public static byte[] FromBase64(string value) => Convert.FromBase64String(value.PadRight(value.Length + (4 - value.Length % 4) % 4, '='));

    private static Dictionary<string, string> Flatten(params HttpHeaders[] all)
    {
        var result = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var headers in all)
        {
            foreach (var (key, values) in headers.NonValidated) result[key] = string.Join(",", values);
        }
        return result;
    }
}

public sealed record RawResponse(int HttpStatus, Dictionary<string, string> Headers, byte[] Body, Dictionary<string, string> Trailers)
{
    /// <summary>grpc-status from the trailers, or from the headers of a trailers-only response.</summary>
    public string? GrpcStatus => Trailers.GetValueOrDefault("grpc-status") ?? Headers.GetValueOrDefault("grpc-status");

    public string? GrpcMessage => Trailers.GetValueOrDefault("grpc-message") ?? Headers.GetValueOrDefault("grpc-message");

    public bool TrailersOnly => Headers.ContainsKey("grpc-status") && Body.Length == 0;
}
