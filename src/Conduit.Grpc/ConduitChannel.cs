using System.Net.Security;
using Grpc.Core;
using Grpc.Net.Client;
using Grpc.Net.Compression;
using Microsoft.Extensions.Logging;

namespace Conduit.Grpc;

/// <summary>
/// How Conduit's clients make a <see cref="GrpcChannel"/>: "http://host:port" speaks h2c (HTTP/2
/// with prior knowledge), "https://host:port" h2 over TLS with ALPN, trusting the system's CAs
/// unless <paramref name="tls"/> says otherwise. gzip and deflate are both understood; calls go
/// over as many HTTP/2 connections as their streams need. Make one per server and reuse it.
/// </summary>
public static class ConduitChannel
{
    /// <summary>The compression algorithms every Conduit server and channel understands.</summary>
    /// <summary>
    /// The logger factory every channel made here gets (unless configure sets its own): the
    /// `conduit` command sets it from CONDUIT_CLIENT_LOG. Null (no client log) by default.
    /// </summary>
    public static ILoggerFactory? DefaultLoggerFactory { get; set; }

    public static IList<ICompressionProvider> CompressionProviders() => [new GzipCompressionProvider(System.IO.Compression.CompressionLevel.Fastest), new DeflateCompressionProvider()];

    /// <param name="address">"http://host:port", "https://host:port", "host:port" (h2c, as grpc's own tools take it), or "conduit:///host:port[,host:port...]" (a log cluster's members, see ConduitCluster).</param>
    public static GrpcChannel ForAddress(string address, Action<GrpcChannelOptions>? configure = null, SslClientAuthenticationOptions? tls = null)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (Cluster.ConduitCluster.IsTarget(address)) return ForAddress(new Uri(address), configure, tls);
        if (!address.Contains("://", StringComparison.Ordinal)) address = "http://" + address;
        if (!Uri.TryCreate(address, UriKind.Absolute, out var uri) || uri.Host.Length == 0)
        {
            throw new ArgumentException($"'{address}' is not a server address: give http://host:port, https://host:port or host:port.");
        }
        return ForAddress(uri, configure, tls);
    }

    public static GrpcChannel ForAddress(Uri address, Action<GrpcChannelOptions>? configure = null, SslClientAuthenticationOptions? tls = null)
    {
        var cluster = address.Scheme == Cluster.ConduitCluster.Scheme;
        if (address.Scheme != Uri.UriSchemeHttp && address.Scheme != Uri.UriSchemeHttps && !cluster)
        {
            throw new ArgumentException($"Address '{address}' must start with http:// or https://.", nameof(address));
        }
        if (cluster) Cluster.ConduitCluster.Validate(address);
        var handler = new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            KeepAlivePingDelay = TimeSpan.FromSeconds(60),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(30),
        };
        if (tls is not null) handler.SslOptions = tls;
        var options = new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            CompressionProviders = CompressionProviders(),
            LoggerFactory = DefaultLoggerFactory,
        };
        if (cluster) Cluster.ConduitCluster.Configure(options, tls); // conduit:///: the cluster's resolver and leader-aware balancer
        var ours = options.HttpHandler;
        configure?.Invoke(options);
        // A configure that brought its own handler or client leaves ours unused (one that wrapped ours in a DelegatingHandler still uses it).
        if (!Uses(options.HttpHandler, ours) || options.HttpClient is not null) ours.Dispose();
        var channel = GrpcChannel.ForAddress(address, options);
        if (cluster) Cluster.ConduitCluster.Attach(channel, options);
        return channel;
    }

    private static bool Uses(HttpMessageHandler? outer, HttpMessageHandler handler)
    {
        for (var h = outer; h is not null; h = (h as DelegatingHandler)?.InnerHandler)
        {
            if (ReferenceEquals(h, handler)) return true;
        }
        return false;
    }
}

/// <summary>Small conveniences for building calls.</summary>
public static class CallOptionsExtensions
{
    /// <summary>These options with a deadline <paramref name="timeout"/> from now.</summary>
    public static CallOptions WithTimeout(this CallOptions options, TimeSpan timeout) => options.WithDeadline(DateTime.UtcNow + timeout);
}
