using Conduit.Rpc.Wire;
using Microsoft.AspNetCore.Http;

namespace Conduit.Rpc.Server;

/// <summary>Metadata to and from ASP.NET Core header dictionaries (the encoding is <see cref="MetadataCodec"/>'s).</summary>
internal static class MetadataHeaders
{
    public static Metadata FromHeaders(IHeaderDictionary headers)
    {
        var metadata = new Metadata();
        foreach (var (key, values) in headers)
        {
            foreach (var value in values)
            {
                if (value is null) continue;
                try
                {
                    MetadataCodec.Add(metadata, key, value);
                }
                catch (FormatException)
                {
                    throw new RpcException(StatusCode.Internal, $"Header '{key}' is not valid base64.");
                }
                catch (ArgumentException)
                {
                    // Not valid gRPC metadata (e.g. a non-ASCII value from a proxy): not exposed.
                }
            }
        }
        return metadata;
    }

    public static void ToHeaders(Metadata metadata, IHeaderDictionary headers)
    {
        foreach (var entry in metadata)
        {
            if (MetadataCodec.TryEncode(entry, out var value)) headers.Append(entry.Key, value);
        }
    }
}
