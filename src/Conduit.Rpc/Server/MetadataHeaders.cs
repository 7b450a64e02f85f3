using Conduit.Rpc.Wire;
using Microsoft.AspNetCore.Http;

namespace Conduit.Rpc.Server;

/// <summary>Metadata to and from ASP.NET Core header dictionaries.</summary>
internal static class MetadataHeaders
{
    public static Metadata FromHeaders(IHeaderDictionary headers)
    {
        var metadata = new Metadata();
        foreach (var (key, values) in headers)
        {
            if (GrpcProtocol.IsReservedHeader(key)) continue;
            if (Metadata.IsBinaryKey(key))
            {
                foreach (var value in values)
                {
                    if (value is null) continue;
                    foreach (var part in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                    {
                        metadata.Add(key, DecodeBinary(key, part));
                    }
                }
            }
            else
            {
                foreach (var value in values)
                {
                    if (value is null) continue;
                    try
                    {
                        metadata.Add(new Metadata.Entry(key, value));
                    }
                    catch (ArgumentException)
                    {
                        // Not valid gRPC metadata (e.g. a non-ASCII value from a proxy): not exposed.
                    }
                }
            }
        }
        return metadata;
    }

    public static void ToHeaders(Metadata metadata, IHeaderDictionary headers)
    {
        foreach (var entry in metadata)
        {
            if (GrpcProtocol.IsReservedHeader(entry.Key)) continue;
            var value = entry.IsBinary ? HeaderEncoding.ToBase64Unpadded(entry.ValueBytes) : entry.Value;
            headers.Append(entry.Key, value);
        }
    }

    private static byte[] DecodeBinary(string key, string value)
    {
        try
        {
            return HeaderEncoding.FromBase64(value);
        }
        catch (FormatException)
        {
            throw new RpcException(StatusCode.Internal, $"Header '{key}' is not valid base64.");
        }
    }
}
