namespace Conduit.Rpc.Wire;

/// <summary>
/// Metadata as HTTP/2 header fields, for the server and the client alike: which headers are the
/// protocol's own (never metadata), how "-bin" values are encoded (base64, unpadded) and read
/// (padded or not, comma-joined values split).
/// </summary>
internal static class MetadataCodec
{
    /// <summary>
    /// Adds the metadata of one received header field; nothing for the protocol's own headers.
    /// Throws FormatException for a "-bin" value that is not base64 and ArgumentException for a
    /// value that is not valid metadata; the caller decides whether that fails the call.
    /// </summary>
    public static void Add(Metadata metadata, string key, string value)
    {
        if (GrpcProtocol.IsReservedHeader(key)) return;
        if (!Metadata.IsBinaryKey(key))
        {
            metadata.Add(key, value);
            return;
        }
        foreach (var part in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            metadata.Add(key, HeaderEncoding.FromBase64(part));
        }
    }

    /// <summary>The header value to send for <paramref name="entry"/>; false for the protocol's own headers.</summary>
    public static bool TryEncode(Metadata.Entry entry, out string value)
    {
        if (GrpcProtocol.IsReservedHeader(entry.Key))
        {
            value = "";
            return false;
        }
        value = entry.IsBinary ? HeaderEncoding.ToBase64Unpadded(entry.ValueBytes) : entry.Value;
        return true;
    }
}
