using System.Net;
using Conduit.Rpc.Wire;

namespace Conduit.Rpc.Client;

/// <summary>Client-side settings of a channel.</summary>
public sealed class RpcChannelOptions
{
    /// <summary>Largest response message accepted (after decompression); larger ones fail with RESOURCE_EXHAUSTED.</summary>
    public int MaxReceiveMessageSize { get; set; } = GrpcProtocol.DefaultMaxReceiveMessageSize;

    /// <summary>Largest request message sent; larger ones fail the call with RESOURCE_EXHAUSTED.</summary>
    public int MaxSendMessageSize { get; set; } = int.MaxValue;

    /// <summary>The algorithms the channel can compress with and accepts in responses.</summary>
    public CompressionProviders CompressionProviders { get; set; } = CompressionProviders.Default;

    /// <summary>
    /// The HTTP handler to send calls through; null builds a SocketsHttpHandler with HTTP/2
    /// multiplexing over as many connections as streams need. Set it to configure TLS.
    /// </summary>
    public HttpMessageHandler? HttpHandler { get; set; }

    /// <summary>Whether disposing the channel disposes <see cref="HttpHandler"/>.</summary>
    public bool DisposeHttpHandler { get; set; } = true;
}

/// <summary>
/// A connection to one gRPC server address: every call of every client made from it is
/// multiplexed over the same HTTP/2 connections. Create one per server and reuse it.
/// "http://" speaks h2c (HTTP/2 with prior knowledge); "https://" speaks h2 over TLS with ALPN.
/// </summary>
public sealed class RpcChannel : IDisposable
{
    private readonly HttpMessageInvoker _http;
    private readonly bool _disposeHandler;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, Uri> _uris = new();

    private RpcChannel(Uri address, RpcChannelOptions options)
    {
        if (address.Scheme != Uri.UriSchemeHttp && address.Scheme != Uri.UriSchemeHttps)
        {
            throw new ArgumentException($"Address '{address}' must start with http:// or https://.", nameof(address));
        }
        Address = address;
        Options = options;
        var handler = options.HttpHandler ?? CreateDefaultHandler();
        _disposeHandler = options.HttpHandler is null || options.DisposeHttpHandler;
        _http = new HttpMessageInvoker(handler, disposeHandler: false);
        Handler = handler;
        Invoker = new HttpCallInvoker(this);
        BaseAddress = address.GetLeftPart(UriPartial.Authority);
    }

    /// <summary>A channel to "http://host:port" or "https://host:port".</summary>
    public static RpcChannel ForAddress(string address, RpcChannelOptions? options = null) =>
        new(new Uri(address), options ?? new RpcChannelOptions());

    public static RpcChannel ForAddress(Uri address, RpcChannelOptions? options = null) =>
        new(address, options ?? new RpcChannelOptions());

    public Uri Address { get; }

    public RpcChannelOptions Options { get; }

    /// <summary>The invoker generated clients call through; interceptors will wrap it.</summary>
    public CallInvoker Invoker { get; }

    internal string BaseAddress { get; }

    internal HttpMessageInvoker Http => _http;

    internal Uri GetUri(IMethod method) => _uris.GetOrAdd(method.FullName, static (path, self) => new Uri(self.BaseAddress + path), this);

    private HttpMessageHandler Handler { get; }

    public void Dispose()
    {
        _http.Dispose();
        if (_disposeHandler) Handler.Dispose();
    }

    private static SocketsHttpHandler CreateDefaultHandler() => new()
    {
        EnableMultipleHttp2Connections = true,
        PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
        KeepAlivePingDelay = TimeSpan.FromSeconds(60),
        KeepAlivePingTimeout = TimeSpan.FromSeconds(30),
        KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
        ConnectTimeout = TimeSpan.FromSeconds(20),
        AutomaticDecompression = DecompressionMethods.None,
        UseProxy = false,
        UseCookies = false,
        AllowAutoRedirect = false,
    };
}
