using Grpc.Core;

namespace Conduit.Testing;

/// <summary>
/// Unary calls with request bytes written by hand: what a generated client never sends (invalid
/// UTF-8 in a string field, unknown fields), to see what the server does with it.
/// </summary>
public static class RawCalls
{
    private static readonly Marshaller<byte[]> s_bytes = Marshallers.Create(b => b, b => b);

    /// <summary>Calls <paramref name="path"/> ("/package.Service/Method") with <paramref name="request"/> as the message bytes.</summary>
    public static async Task<byte[]> UnaryAsync(ChannelBase channel, string path, byte[] request, CallOptions options)
    {
        ArgumentNullException.ThrowIfNull(channel);
        ArgumentNullException.ThrowIfNull(path);
        var slash = path.LastIndexOf('/');
        var method = new Method<byte[], byte[]>(MethodType.Unary, path[1..slash], path[(slash + 1)..], s_bytes, s_bytes);
        return await channel.CreateCallInvoker().AsyncUnaryCall(method, null, options, request).ResponseAsync.ConfigureAwait(false);
    }

    /// <summary>A client-streaming call of <paramref name="requests"/>, each as the bytes of one message.</summary>
    public static async Task<byte[]> ClientStreamingAsync(ChannelBase channel, string path, IEnumerable<byte[]> requests, CallOptions options)
    {
        ArgumentNullException.ThrowIfNull(channel);
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(requests);
        var slash = path.LastIndexOf('/');
        var method = new Method<byte[], byte[]>(MethodType.ClientStreaming, path[1..slash], path[(slash + 1)..], s_bytes, s_bytes);
        using var call = channel.CreateCallInvoker().AsyncClientStreamingCall(method, null, options);
        try
        {
            foreach (var request in requests) await call.RequestStream.WriteAsync(request).ConfigureAwait(false);
            await call.RequestStream.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is RpcException or InvalidOperationException)
        {
            // The server ended the call early; ResponseAsync says how.
        }
        return await call.ResponseAsync.ConfigureAwait(false);
    }

    /// <summary>A length-delimited field (string, bytes, message) of a protobuf message: tag, length, bytes.</summary>
    public static byte[] Field(int number, params byte[] value) => [.. Varint((ulong)((number << 3) | 2)), .. Varint((ulong)value.Length), .. value];

    /// <summary>A varint field (int32, int64, uint64, bool, enum) of a protobuf message.</summary>
    public static byte[] VarintField(int number, ulong value) => [.. Varint((ulong)(number << 3)), .. Varint(value)];

    private static List<byte> Varint(ulong value)
    {
        var bytes = new List<byte>();
        while (value >= 0x80)
        {
            bytes.Add((byte)(value | 0x80));
            value >>= 7;
        }
        bytes.Add((byte)value);
        return bytes;
    }
}
