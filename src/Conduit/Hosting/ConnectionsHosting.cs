using Conduit.Grpc;
using Grpc.AspNetCore.Server;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Conduit.Hosting;

/// <summary>
/// Connection settings of <c>conduit serve</c>, bound from "Conduit:Connections"
/// (appsettings.json, CONDUIT__CONNECTIONS__*, `conduit serve --max-connection-age ...`).
/// docs/operations.md ("Connections") maps each onto grpc-go's server options.
/// </summary>
public sealed class ConnectionOptions
{
    public const string Section = "Conduit:Connections";

    /// <summary>Ping a client after this long without a frame from it (grpc-go keepalive.ServerParameters.Time).</summary>
    public TimeSpan KeepAliveTime { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Close the connection when a ping is not answered within this (keepalive.ServerParameters.Timeout).</summary>
    public TimeSpan KeepAliveTimeout { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>Concurrent calls (HTTP/2 streams) per connection; a client's next call waits for a free one (grpc.MaxConcurrentStreams).</summary>
    public int MaxConcurrentStreams { get; set; } = 100;

    /// <summary>Largest request message (grpc.MaxRecvMsgSize): the gRPC default 4 MiB.</summary>
    public int MaxReceiveMessageBytes { get; set; } = 4 * 1024 * 1024;

    /// <summary>Largest response message (grpc.MaxSendMsgSize); null: no limit.</summary>
    public int? MaxSendMessageBytes { get; set; }

    /// <summary>Close a connection that has had no call for this long (keepalive.ServerParameters.MaxConnectionIdle); Kestrel's default.</summary>
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.FromSeconds(130);

    /// <summary>Send a connection a GOAWAY at this age, ±10% (keepalive.ServerParameters.MaxConnectionAge); null: never.</summary>
    public TimeSpan? MaxConnectionAge { get; set; }

    /// <summary>Then abort it after this much more (MaxConnectionAgeGrace); null: let its calls finish however long they take.</summary>
    public TimeSpan? MaxConnectionAgeGrace { get; set; }

    /// <summary>Request metadata above this is logged (grpc's soft limit).</summary>
    public int MetadataSoftLimitBytes { get; set; } = 8 * 1024;

    /// <summary>
    /// Take HTTP/2 calls whose :authority is not a valid host (grpcio's round_robin over
    /// "ipv4:a:1,b:2" sends that comma list), which Kestrel alone resets (AuthorityRepair).
    /// </summary>
    public bool RepairAuthority { get; set; } = true;

    /// <summary>Request metadata above this is refused RESOURCE_EXHAUSTED (grpc.MaxHeaderListSize; grpc's hard limit).</summary>
    public int MaxMetadataBytes { get; set; } = 16 * 1024;

    /// <summary>
    /// Size of the blocks connections read into and buffer in (<see cref="TransportBlocks"/>): 16384,
    /// the default, takes one HTTP/2 DATA frame per read (large messages: the log's producers).
    /// 0: Kestrel's own 4 KiB blocks.
    /// </summary>
    public int TransportBlockBytes { get; set; } = 16 * 1024;
}

/// <summary>
/// Kestrel and grpc-dotnet set from <see cref="ConnectionOptions"/>, the connection-age middleware
/// on every listener, and the protocol checks (<see cref="GrpcRequestChecks"/>) in front of the
/// gRPC endpoints.
/// </summary>
public static class ConnectionsHosting
{
    /// <summary>Before the listeners are added (their defaults carry the connection-age middleware).</summary>
    public static ConnectionOptions Configure(WebApplicationBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = builder.Configuration.GetSection(ConnectionOptions.Section).Get<ConnectionOptions>() ?? new ConnectionOptions();
        Validate(options);
        builder.Services.AddSingleton(options);
        builder.WebHost.ConfigureKestrel((context, kestrel) => ConfigureKestrel(kestrel, options));
        // Kestrel's socket transport registered its default already (CreateSlimBuilder); the last registration is the one it gets.
        if (options.TransportBlockBytes != 0) builder.Services.AddSingleton<Microsoft.AspNetCore.Connections.IMemoryPoolFactory<byte>>(new TransportBlocks(options.TransportBlockBytes));
        // After AddGrpc's own configuration, whenever that is registered.
        builder.Services.PostConfigure<GrpcServiceOptions>(o =>
        {
            o.MaxReceiveMessageSize = options.MaxReceiveMessageBytes;
            o.MaxSendMessageSize = options.MaxSendMessageBytes;
        });
        return options;
    }

    /// <summary>After routing and <see cref="GrpcCalls"/>.</summary>
    public static void Use(WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var options = app.Services.GetRequiredService<ConnectionOptions>();
        if (options.MaxConnectionAge is not null) app.UseConnectionAge();
        app.UseGrpcRequestChecks(new MetadataLimits { SoftLimitBytes = options.MetadataSoftLimitBytes, HardLimitBytes = options.MaxMetadataBytes });
    }

    private static void ConfigureKestrel(KestrelServerOptions kestrel, ConnectionOptions options)
    {
        var limits = kestrel.Limits;
        // A gRPC stream may be quiet for as long as its deadline allows (a chat listener, a producer
        // between records). Kestrel's minimum request body rate (240 B/s after 5 s) would abort the
        // whole HTTP/2 connection, every stream on it, for one quiet stream. Dead peers are found by
        // keepalive pings instead; floods are bounded by MaxConcurrentStreams and flow control.
        limits.MinRequestBodyDataRate = null;
        limits.Http2.KeepAlivePingDelay = options.KeepAliveTime;
        limits.Http2.KeepAlivePingTimeout = options.KeepAliveTimeout;
        limits.Http2.MaxStreamsPerConnection = options.MaxConcurrentStreams;
        limits.KeepAliveTimeout = options.IdleTimeout;
        // Kestrel's own header limits (100 entries, 32 KiB, 16 KiB per field) answer HTTP 431 or
        // reset the connection, with no gRPC status and nothing logged at Information. Set them well
        // above the gRPC limit, which GrpcRequestChecks enforces with RESOURCE_EXHAUSTED and a log line.
        var kestrelHeaderBytes = Math.Max(64 * 1024, 4 * options.MaxMetadataBytes);
        limits.MaxRequestHeadersTotalSize = kestrelHeaderBytes;
        limits.Http2.MaxRequestHeaderFieldSize = kestrelHeaderBytes;
        limits.MaxRequestHeaderCount = Math.Max(2000, options.MaxMetadataBytes / 32 + 100);
        if (options.MaxConnectionAge is { } age)
        {
            var connectionAge = new ConnectionAge(age, options.MaxConnectionAgeGrace,
                kestrel.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger<ConnectionAge>());
            kestrel.ConfigureEndpointDefaults(listen => listen.UseConnectionAge(connectionAge));
        }
    }

    private static void Validate(ConnectionOptions o)
    {
        if (o.TransportBlockBytes != 0 && o.TransportBlockBytes is < TransportBlocks.MinBlockBytes or > TransportBlocks.MaxBlockBytes) throw new ArgumentException($"{ConnectionOptions.Section}:TransportBlockBytes must be 0 (Kestrel's own pool) or {TransportBlocks.MinBlockBytes} to {TransportBlocks.MaxBlockBytes}.");
        if (o.MaxConcurrentStreams < 1) throw new ArgumentException($"{ConnectionOptions.Section}:MaxConcurrentStreams must be at least 1.");
        if (o.MaxReceiveMessageBytes < 1) throw new ArgumentException($"{ConnectionOptions.Section}:MaxReceiveMessageBytes must be positive.");
        if (o.MaxSendMessageBytes is < 1) throw new ArgumentException($"{ConnectionOptions.Section}:MaxSendMessageBytes must be positive (or unset: no limit).");
        if (o.MaxConnectionAge is { } age && age <= TimeSpan.Zero) throw new ArgumentException($"{ConnectionOptions.Section}:MaxConnectionAge must be positive (or unset: never).");
        if (o.MaxConnectionAgeGrace is { } grace && grace < TimeSpan.Zero) throw new ArgumentException($"{ConnectionOptions.Section}:MaxConnectionAgeGrace cannot be negative.");
        if (o.KeepAliveTime <= TimeSpan.Zero || o.KeepAliveTimeout <= TimeSpan.Zero) throw new ArgumentException($"{ConnectionOptions.Section}:KeepAliveTime and KeepAliveTimeout must be positive.");
        if (o.MaxMetadataBytes < 1024 || o.MetadataSoftLimitBytes > o.MaxMetadataBytes) throw new ArgumentException($"{ConnectionOptions.Section}:MaxMetadataBytes must be at least 1024 and not below MetadataSoftLimitBytes.");
    }
}
