using Conduit.Grpc;
using Conduit.Services.Log;
using Conduit.Storage.Log;
using Grpc.Core;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Conduit.Hosting;

/// <summary>
/// Settings of the Log service, bound from "Conduit:Log" (appsettings.json, CONDUIT__LOG__* and
/// `conduit serve --log-durability`). The defaults keep every acknowledged record across a crash.
/// </summary>
public sealed class LogOptions
{
    public const string Section = "Conduit:Log";

    /// <summary>Where the topics live; default &lt;DataDir&gt;/log.</summary>
    public string? Directory { get; set; }

    /// <summary>Always (fsync before acknowledging, group commit), Interval or Never.</summary>
    public Durability Durability { get; set; } = Durability.Always;

    /// <summary>With Interval: how often to fsync.</summary>
    public int FlushIntervalMs { get; set; } = 100;

    public long SegmentBytes { get; set; } = 64L * 1024 * 1024;

    /// <summary>0: keep everything.</summary>
    public long RetentionBytes { get; set; }

    /// <summary>0: keep everything.</summary>
    public long RetentionMs { get; set; }

    /// <summary>How many topics may exist (each keeps its segment files open).</summary>
    public int MaxTopics { get; set; } = 1000;

    /// <summary>How often retention runs besides at every segment roll.</summary>
    public int RetentionCheckSeconds { get; set; } = 60;

    /// <summary>ConsumeStream followers one principal (user name, or else client IP) may have open; more are RESOURCE_EXHAUSTED.</summary>
    public int MaxConsumeStreamsPerPrincipal { get; set; } = 100;

    /// <summary>Bytes of large records (64 KiB and up) all ConsumeStream followers may have on their way to clients at once.</summary>
    public long ConsumeStreamBufferBytes { get; set; } = 32L * 1024 * 1024;

    /// <summary>An idempotent producer idle this long (by record timestamps) is forgotten; its next record must start a new sequence. 7 days.</summary>
    public long ProducerExpirationMs { get; set; } = 7L * 24 * 3600 * 1000;

    /// <summary>Idempotent producers a topic remembers; one more makes it forget the one that wrote least recently.</summary>
    public int MaxProducersPerTopic { get; set; } = 1000;

    /// <summary>How many of a producer's latest sequence numbers a retry is answered with its offset for.</summary>
    public int ProducerWindow { get; set; } = 8192;

    /// <summary>Bytes at the durable end of each topic kept in the OS page cache; older ones are dropped from it once fsynced (docs/log.md, "The page cache"). 0: the kernel decides alone.</summary>
    public long PageCacheBytes { get; set; } = 64L * 1024 * 1024;

    /// <summary>
    /// How long an idempotent producer's Produce or ProduceBatch that arrives ahead of its
    /// predecessor waits for it before it is answered SEQUENCE_GAP (docs/log.md); 0: not at all.
    /// </summary>
    public int OutOfOrderHoldMs { get; set; } = (int)SequenceHold.DefaultHold.TotalMilliseconds;

    public TopicSettings TopicDefaults() => new()
    {
        PageCacheBytes = PageCacheBytes,
        ProducerExpiration = TimeSpan.FromMilliseconds(ProducerExpirationMs),
        MaxProducers = MaxProducersPerTopic,
        ProducerWindow = ProducerWindow,
        Durability = Durability,
        FlushInterval = TimeSpan.FromMilliseconds(FlushIntervalMs),
        SegmentBytes = SegmentBytes,
        RetentionBytes = RetentionBytes,
        RetentionAge = TimeSpan.FromMilliseconds(RetentionMs),
    };
}

public static class LogHosting
{
    public static void AddLog(IServiceCollection services, IConfiguration configuration, ServeOptions serve)
    {
        var options = configuration.GetSection(LogOptions.Section).Get<LogOptions>() ?? new LogOptions();
        services.AddSingleton<ILogStorage>(provider => CreateFileStorage(provider, options, serve));
        services.AddSingleton<IExceptionMapper, LogExceptionMapper>(); // storage failures to statuses, for the log's calls
        services.AddSingleton(new ConsumeStreamGate(new ConsumeStreamLimits
        {
            MaxStreamsPerPrincipal = options.MaxConsumeStreamsPerPrincipal,
            BufferBytes = options.ConsumeStreamBufferBytes,
        }));
        services.TryAddSingleton<ILogServers, SingleNodeServers>();
        // Members are asked for their progress at the address GetServers lists, which is the first
        // of Urls (Conduit:Cluster:RpcAddress): over TLS when that one is https.
        var secure = serve.Urls.Length > 0 && serve.Urls[0].StartsWith("https://", StringComparison.OrdinalIgnoreCase);
        // With a cluster CA, members' https:// ports are trusted by it and this node presents its Raft certificate (docs/cluster.md, Security).
        var cluster = configuration.GetSection(Cluster.ClusterOptions.Section).Get<Cluster.ClusterOptions>();
        var memberTls = secure && cluster is { IsEnabled: true } ? ClusterHosting.MemberTls(cluster, serve) : null;
        services.AddSingleton(provider => new ClusterProgress(provider.GetService<ILogServers>(), secure, memberTls));
        services.AddSingleton(new SequenceHold(TimeSpan.FromMilliseconds(Math.Max(0, options.OutOfOrderHoldMs))));
        services.AddSingleton<LogService>();
        services.AddSingleton<LogAdminService>();
        // Opened (and recovered) before the first call; a log folder that cannot be opened keeps
        // only the log down (UNAVAILABLE, NOT_SERVING), retried in the background.
        StorageGates.Add(services, new StorageGate("log-storage", "the log's storage", [typeof(LogService), typeof(LogAdminService)], async (sp, token) =>
        {
            // A cluster node's log opens with its Raft node (WAL replayed, then the Raft port).
            if (sp.GetRequiredService<ILogStorage>() is Cluster.ReplicatedLogStorage replicated) await replicated.Node.StartAsync(token);
        }, serve.DataDir));
    }

    /// <summary>The embedded file engine, where Conduit:Log says (a cluster node applies its replicated log to one too).</summary>
    public static FileLogStorage CreateFileStorage(IServiceProvider provider, LogOptions options, ServeOptions serve) => new(
        options.Directory ?? Path.Combine(serve.DataDir, "log"),
        options.TopicDefaults(),
        TimeSpan.FromSeconds(options.RetentionCheckSeconds),
        provider.GetRequiredService<ILoggerFactory>().CreateLogger("Conduit.Log"),
        maxTopics: options.MaxTopics);

    /// <summary>GetServers on one node: this server, as leader, at its first gRPC listener (as bound, so port 0 reads as the real port).</summary>
    private sealed class SingleNodeServers(IServer server) : ILogServers
    {
        public IReadOnlyList<LogServer> Servers()
        {
            var first = server.Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault();
            var address = first is null ? "" : Uri.TryCreate(first, UriKind.Absolute, out var uri) ? $"{uri.Host}:{uri.Port}" : first;
            return [new LogServer(Environment.MachineName, address, IsLeader: true)];
        }
    }

    public static void MapLog(WebApplication app)
    {
        app.MapGrpcService<LogService>();
        app.MapGrpcService<LogAdminService>();
    }
}
