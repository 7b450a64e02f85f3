using System.Net;
using System.Net.Security;
using System.Runtime.CompilerServices;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;
using Grpc.Net.Client.Balancer;
using Grpc.Net.Compression;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Conduit.Grpc;

/// <summary>
/// How Conduit's clients make a <see cref="GrpcChannel"/>. The target is one of (docs/client.md):
/// "host:port" or "http://host:port" (h2c, HTTP/2 with prior knowledge), "https://host:port" (h2
/// over TLS with ALPN, trusting the system's CAs unless <paramref name="tls"/> says otherwise), a
/// comma list of those ("http://a:1,b:2": every server, by the list's scheme), "static:///a:1,b:2",
/// "dns:///name:port" (every address of the name, re-resolved every <see cref="DnsRefreshInterval"/>
/// and when a connection fails), "conduit:///host:port[,host:port...]" (a log cluster's members
/// as GetServers lists them, with the leader-aware balancer: <see cref="Cluster.ConduitCluster"/>),
/// or a scheme of a resolver registered in
/// <see cref="AddResolversAndBalancers"/>; targets with a resolver scheme speak h2c unless
/// <paramref name="tls"/> is given. Which servers take the calls is the service config's
/// loadBalancingConfig: pick_first (grpc's default) or round_robin (with client-side health
/// checking, <see cref="HealthCheckedRoundRobinFactory"/>). Without a service config of the
/// caller's, Conduit's own (<see cref="ConduitServiceConfig.DefaultJson"/>) retries reads.
/// gzip and deflate are both understood; calls go over as many HTTP/2 connections as their
/// streams need. Make one per server (set) and reuse it.
/// </summary>
public static class ConduitChannel
{
    /// <summary>
    /// The logger factory every channel made here gets (unless configure sets its own): the
    /// `conduit` command sets it from CONDUIT_CLIENT_LOG. Null (no client log) by default.
    /// </summary>
    public static ILoggerFactory? DefaultLoggerFactory { get; set; }

    /// <summary>How often a dns:/// target is resolved again (also at once after a connection fails).</summary>
    public static TimeSpan DnsRefreshInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>The compression algorithms every Conduit server and channel understands.</summary>
    public static IList<ICompressionProvider> CompressionProviders() => [new GzipCompressionProvider(System.IO.Compression.CompressionLevel.Fastest), new DeflateCompressionProvider()];

    /// <summary>
    /// THE place where every resolver (target scheme) and balancer (loadBalancingConfig name) of
    /// Conduit's channels is registered: the channel looks factories up by name here first, then
    /// among grpc-dotnet's own (dns, pick_first, round_robin). Add new ones to this list (a
    /// conduit:/// resolver, a leader-aware balancer). <paramref name="target"/> is what the
    /// channel is being made for: its TLS settings and a way to open a plain channel to one address.
    /// </summary>
    private static void AddResolversAndBalancers(IServiceCollection services, ChannelTarget target)
    {
        // static:///a:1,b:2 and comma lists.
        services.AddSingleton<ResolverFactory>(new StaticResolverFactory(StaticAddresses));
        // dns:///name:port, re-resolved.
        services.AddSingleton<ResolverFactory>(new DnsResolverFactory(DnsRefreshInterval));
        // round_robin that skips servers whose grpc.health.v1 status is NOT_SERVING.
        services.AddSingleton<LoadBalancerFactory>(new HealthCheckedRoundRobinFactory(target.ChannelTo, target.ServiceConfig.HealthCheckServiceName ?? "", () => target.Headers));
        // conduit:///seeds: a log cluster's members from GetServers, and conduit_leader (writes to the leader, reads over followers).
        Cluster.ConduitCluster.AddConduitCluster(services);
    }

    /// <summary>What a channel is being made for, as the resolvers and balancers see it.</summary>
    public sealed class ChannelTarget(bool secure, SslClientAuthenticationOptions? tls, ConduitServiceConfig serviceConfig)
    {
        /// <summary>https (TLS) rather than h2c.</summary>
        public bool Secure { get; } = secure;

        public SslClientAuthenticationOptions? Tls { get; } = tls;

        public ConduitServiceConfig ServiceConfig { get; } = serviceConfig;

        /// <summary>Headers the channel's own calls (health Watch, a conduit:/// resolver's GetServers) carry: <see cref="UseHeaders"/>.</summary>
        public Metadata? Headers { get; internal set; }

        /// <summary>The channel's credentials (with any call credentials), which <see cref="ChannelTo"/> channels share.</summary>
        internal (ChannelCredentials Credentials, bool InsecureCallCredentials)? Credentials { get; set; }

        /// <summary>The channel's reconnect backoff (null: grpc-dotnet's), which <see cref="ChannelTo"/> channels share.</summary>
        public (TimeSpan Initial, TimeSpan? Max)? ReconnectBackoff { get; internal set; }

        /// <summary>
        /// A plain channel (no balancing, no retries) to one address, with the same TLS and reconnect
        /// backoff: a health Watch to a restarted server is not left waiting out grpc-dotnet's
        /// default backoff (up to 120 s) after the channel itself has reconnected.
        /// </summary>
        public GrpcChannel ChannelTo(DnsEndPoint endPoint)
        {
            ArgumentNullException.ThrowIfNull(endPoint);
            var host = endPoint.Host.Contains(':', StringComparison.Ordinal) ? $"[{endPoint.Host}]" : endPoint.Host;
            var backoff = ReconnectBackoff;
            var credentials = Credentials;
            return ForAddress(new Uri($"{(Secure ? "https" : "http")}://{host}:{endPoint.Port}"), o =>
            {
                o.ServiceConfig = null;
                if (backoff is { } b) (o.InitialReconnectBackoff, o.MaxReconnectBackoff) = b;
                if (credentials is { } c) (o.Credentials, o.UnsafeUseInsecureChannelCallCredentials) = c;
            }, Tls);
        }
    }

    /// <param name="address">A target (see the class): "host:port", "http(s)://host:port", a comma list, "static:///...", "dns:///...", "conduit:///...".</param>
    public static GrpcChannel ForAddress(string address, Action<GrpcChannelOptions>? configure = null, SslClientAuthenticationOptions? tls = null) =>
        ForAddress(address, configure, tls, serviceConfig: null);

    /// <param name="serviceConfig">Balancing, retries, hedging, timeouts (null: <see cref="ConduitServiceConfig.Default"/>).</param>
    public static GrpcChannel ForAddress(string address, Action<GrpcChannelOptions>? configure, SslClientAuthenticationOptions? tls, ConduitServiceConfig? serviceConfig)
    {
        ArgumentNullException.ThrowIfNull(address);
        var (uri, secure) = ParseTarget(address, tls is not null);
        return Create(uri, secure, configure, tls, serviceConfig ?? ConduitServiceConfig.Default());
    }

    public static GrpcChannel ForAddress(Uri address, Action<GrpcChannelOptions>? configure = null, SslClientAuthenticationOptions? tls = null)
    {
        ArgumentNullException.ThrowIfNull(address);
        var cluster = address.Scheme == Cluster.ConduitCluster.Scheme;
        if (address.Scheme != Uri.UriSchemeHttp && address.Scheme != Uri.UriSchemeHttps && !cluster)
        {
            throw new ArgumentException($"Address '{address}' must start with http:// or https://.", nameof(address));
        }
        if (cluster) Cluster.ConduitCluster.Validate(address);
        return Create(address, cluster ? tls is not null : address.Scheme == Uri.UriSchemeHttps, configure, tls, ConduitServiceConfig.Default());
    }

    /// <summary>
    /// An invoker for <paramref name="channel"/> that also applies its service config's per-method
    /// timeout and waitForReady (which grpc-dotnet's service config lacks).
    /// </summary>
    public static CallInvoker CreateCallInvoker(GrpcChannel channel)
    {
        ArgumentNullException.ThrowIfNull(channel);
        var invoker = channel.CreateCallInvoker();
        return Configs.TryGetValue(channel, out var config) && config.Methods.Count > 0 ? invoker.Intercept(new ConduitServiceConfig.MethodDefaults(config)) : invoker;
    }

    private static readonly ConditionalWeakTable<GrpcChannel, ConduitServiceConfig> Configs = [];

    private static readonly ConditionalWeakTable<GrpcChannelOptions, Metadata> ChannelHeaders = [];

    /// <summary>
    /// Headers (say, `authorization: Bearer ...`) that the calls a channel makes by itself carry:
    /// round_robin's health Watch streams and a conduit:/// resolver's GetServers. A server with a
    /// permission policy refuses them without. Call it from the configure callback of
    /// <see cref="ForAddress(string, Action{GrpcChannelOptions}?, SslClientAuthenticationOptions?)"/>;
    /// the caller's own calls still pass their headers themselves (call options or an interceptor).
    /// Call credentials in <see cref="GrpcChannelOptions.Credentials"/> are carried too, without this.
    /// </summary>
    public static void UseHeaders(GrpcChannelOptions options, Metadata headers)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(headers);
        ChannelHeaders.AddOrUpdate(options, headers);
    }

    private static GrpcChannel Create(Uri address, bool secure, Action<GrpcChannelOptions>? configure, SslClientAuthenticationOptions? tls, ConduitServiceConfig serviceConfig)
    {
        var handler = new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            KeepAlivePingDelay = TimeSpan.FromSeconds(60),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(30),
        };
        if (tls is not null) handler.SslOptions = tls;
        var services = new ServiceCollection();
        var target = new ChannelTarget(secure, tls, serviceConfig);
        AddResolversAndBalancers(services, target);
        var options = new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            CompressionProviders = CompressionProviders(),
            LoggerFactory = DefaultLoggerFactory,
            ServiceConfig = serviceConfig.Config,
            ServiceProvider = services.BuildServiceProvider(),
        };
        // A resolver scheme says nothing about TLS: the channel's credentials do.
        if (address.Scheme != Uri.UriSchemeHttp && address.Scheme != Uri.UriSchemeHttps) options.Credentials = secure ? ChannelCredentials.SecureSsl : ChannelCredentials.Insecure;
        var cluster = address.Scheme == Cluster.ConduitCluster.Scheme;
        if (cluster) Cluster.ConduitCluster.Configure(options, tls); // wraps our handler: re-resolve at once on NOT_LEADER
        var ours = options.HttpHandler;
        configure?.Invoke(options);
        target.ReconnectBackoff = (options.InitialReconnectBackoff, options.MaxReconnectBackoff);
        if (options.Credentials is { } credentials) target.Credentials = (credentials, options.UnsafeUseInsecureChannelCallCredentials);
        if (ChannelHeaders.TryGetValue(options, out var headers))
        {
            target.Headers = headers;
            if (cluster) Cluster.ConduitCluster.UseHeaders(options, headers);
        }
        // A configure that brought its own handler or client leaves ours unused (one that wrapped ours in a DelegatingHandler still uses it).
        if (!Uses(options.HttpHandler, ours) || options.HttpClient is not null) ours.Dispose();
        GrpcChannel channel;
        try
        {
            channel = GrpcChannel.ForAddress(address, options);
        }
        catch (InvalidOperationException ex) when (ex.Message.StartsWith("No address resolver", StringComparison.Ordinal))
        {
            throw new ArgumentException($"'{address}': no resolver for the scheme '{address.Scheme}' (give host:port, http(s)://host:port, a comma list, static:///a:1,b:2, dns:///name:port or conduit:///host:port).", ex);
        }
        if (ReferenceEquals(options.ServiceConfig, serviceConfig.Config)) Configs.AddOrUpdate(channel, serviceConfig);
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

    /// <summary>The channel address and whether it is TLS, from a target (see the class).</summary>
    public static (Uri Address, bool Secure) ParseTarget(string target, bool tlsGiven = false)
    {
        ArgumentNullException.ThrowIfNull(target);
        target = target.Trim();
        if (Cluster.ConduitCluster.IsTarget(target))
        {
            var cluster = new Uri(target);
            Cluster.ConduitCluster.Validate(cluster);
            return (cluster, tlsGiven);
        }
        if (target.Contains(',', StringComparison.Ordinal) && !target.StartsWith("static:", StringComparison.Ordinal))
        {
            // A comma list: each entry host:port, or with the list's scheme.
            var scheme = target.StartsWith("https://", StringComparison.OrdinalIgnoreCase) ? "https" : "http";
            var entries = target.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(e => Endpoint(e, scheme, target)).ToList();
            return (new Uri("static:///" + string.Join(',', entries.Select(e => e.Host.Contains(':', StringComparison.Ordinal) ? $"[{e.Host}]:{e.Port}" : $"{e.Host}:{e.Port}"))), scheme == "https");
        }
        if (!target.Contains("://", StringComparison.Ordinal) && !target.StartsWith("dns:", StringComparison.Ordinal)) target = "http://" + target;
        if (!Uri.TryCreate(target, UriKind.Absolute, out var uri))
        {
            throw new ArgumentException($"'{Shorten(target)}' is not a server address: give host:port, http(s)://host:port, a comma list, static:///a:1,b:2 or dns:///name:port.");
        }
        if (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps)
        {
            if (uri.Host.Length == 0) throw new ArgumentException($"'{Shorten(target)}' is not a server address: give http://host:port, https://host:port or host:port.");
            return (uri, uri.Scheme == Uri.UriSchemeHttps);
        }
        if (uri.Scheme == "static") _ = StaticAddresses(uri); // says what is wrong now, not at the first call
        return (uri, tlsGiven);
    }

    private static DnsEndPoint Endpoint(string entry, string scheme, string whole)
    {
        var text = entry.Contains("://", StringComparison.Ordinal) ? entry : scheme + "://" + entry;
        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || uri.Host.Length == 0 || uri.Scheme != scheme || uri.PathAndQuery is not ("/" or ""))
        {
            throw new ArgumentException($"'{Shorten(entry)}' in '{Shorten(whole)}' is not host:port (every entry of a list has the list's scheme, {scheme}://).");
        }
        return new DnsEndPoint(uri.Host.Trim('[', ']'), uri.Port);
    }

    private static IReadOnlyList<BalancerAddress> StaticAddresses(Uri uri)
    {
        var list = Uri.UnescapeDataString(uri.AbsolutePath).Trim('/');
        var entries = list.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (entries.Length == 0) throw new ArgumentException($"'{uri}' names no address: give static:///host:port,host:port.");
        return entries.Select(e => Endpoint(e, "http", uri.OriginalString)).Select(e => new BalancerAddress(e.Host, e.Port)).ToList();
    }

    private static string Shorten(string text) => text.Length > 128 ? text[..125] + "..." : text;
}

/// <summary>Small conveniences for building calls.</summary>
public static class CallOptionsExtensions
{
    /// <summary>These options with a deadline <paramref name="timeout"/> from now.</summary>
    public static CallOptions WithTimeout(this CallOptions options, TimeSpan timeout) => options.WithDeadline(DateTime.UtcNow + timeout);
}
