using System.IO.Compression;
using Grpc.Net.Compression;

namespace Conduit.Grpc;

/// <summary>
/// grpc-encoding "deflate" (doc/compression.md): the zlib format of RFC 1950, as the C-core,
/// Go and Java implementations use it. grpc-dotnet ships gzip only.
/// </summary>
public sealed class DeflateCompressionProvider(CompressionLevel level = CompressionLevel.Fastest) : ICompressionProvider
{
    public string EncodingName => "deflate";

    public Stream CreateCompressionStream(Stream stream, CompressionLevel? compressionLevel) =>
        new ZLibStream(stream, compressionLevel ?? level, leaveOpen: true);

    public Stream CreateDecompressionStream(Stream stream) => new ZLibStream(stream, CompressionMode.Decompress, leaveOpen: true);
}
