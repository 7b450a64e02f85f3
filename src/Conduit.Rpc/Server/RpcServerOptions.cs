using Conduit.Rpc.Wire;

namespace Conduit.Rpc.Server;

/// <summary>Server-wide settings, configured through <c>services.AddRpc(o => ...)</c>.</summary>
public sealed class RpcServerOptions
{
    /// <summary>Largest request message accepted (after decompression); larger ones fail with RESOURCE_EXHAUSTED.</summary>
    public int MaxReceiveMessageSize { get; set; } = GrpcProtocol.DefaultMaxReceiveMessageSize;

    /// <summary>Largest response message sent; larger ones fail the call with RESOURCE_EXHAUSTED.</summary>
    public int MaxSendMessageSize { get; set; } = int.MaxValue;

    /// <summary>Compression of responses for every call whose client accepts it (null: none).</summary>
    public string? ResponseCompression { get; set; }

    /// <summary>The algorithms the server understands and offers in grpc-accept-encoding.</summary>
    public CompressionProviders CompressionProviders { get; set; } = CompressionProviders.Default;

    /// <summary>Put an exception's message (never its stack trace) in the UNKNOWN status a throwing handler gets.</summary>
    public bool EnableDetailedErrors { get; set; }
}
