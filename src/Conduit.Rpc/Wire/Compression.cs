using System.IO.Compression;

namespace Conduit.Rpc.Wire;

/// <summary>A message compression algorithm, named as in grpc-encoding (doc/compression.md).</summary>
public interface ICompressionProvider
{
    string EncodingName { get; }

    Stream CreateCompressionStream(Stream output);

    Stream CreateDecompressionStream(Stream input);
}

/// <summary>"gzip": RFC 1952.</summary>
public sealed class GzipCompressionProvider(CompressionLevel level = CompressionLevel.Fastest) : ICompressionProvider
{
    public string EncodingName => "gzip";

    public Stream CreateCompressionStream(Stream output) => new GZipStream(output, level, leaveOpen: true);

    public Stream CreateDecompressionStream(Stream input) => new GZipStream(input, CompressionMode.Decompress, leaveOpen: true);
}

/// <summary>"deflate": the zlib format of RFC 1950, as gRPC implementations use it.</summary>
public sealed class DeflateCompressionProvider(CompressionLevel level = CompressionLevel.Fastest) : ICompressionProvider
{
    public string EncodingName => "deflate";

    public Stream CreateCompressionStream(Stream output) => new ZLibStream(output, level, leaveOpen: true);

    public Stream CreateDecompressionStream(Stream input) => new ZLibStream(input, CompressionMode.Decompress, leaveOpen: true);
}

/// <summary>The set of algorithms one server or channel supports.</summary>
public sealed class CompressionProviders
{
    private readonly Dictionary<string, ICompressionProvider> _byName;

    public CompressionProviders(IEnumerable<ICompressionProvider> providers)
    {
        _byName = providers.ToDictionary(p => p.EncodingName, StringComparer.OrdinalIgnoreCase);
        AcceptEncoding = string.Join(",", new[] { GrpcProtocol.IdentityEncoding }.Concat(_byName.Keys));
    }

    public static CompressionProviders Default { get; } = new([new GzipCompressionProvider(), new DeflateCompressionProvider()]);

    /// <summary>The grpc-accept-encoding value: identity and every provider.</summary>
    public string AcceptEncoding { get; }

    public bool TryGet(string name, out ICompressionProvider? provider) => _byName.TryGetValue(name, out provider);

    /// <summary>Whether a grpc-accept-encoding header value lists <paramref name="name"/>.</summary>
    public static bool Accepts(string? acceptEncoding, string name)
    {
        if (string.IsNullOrEmpty(acceptEncoding)) return false;
        foreach (var range in acceptEncoding.AsSpan().Split(','))
        {
            if (acceptEncoding.AsSpan(range).Trim().Equals(name, StringComparison.OrdinalIgnoreCase)) return true;
        }
        return false;
    }
}
