using Conduit.Grpc;
using Conduit.Services.Log;
using Conduit.Storage.Log;
using Grpc.Core;

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

    public TopicSettings TopicDefaults() => new()
    {
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
        services.AddSingleton<ILogStorage>(provider => new FileLogStorage(
            options.Directory ?? Path.Combine(serve.DataDir, "log"),
            options.TopicDefaults(),
            TimeSpan.FromSeconds(options.RetentionCheckSeconds),
            provider.GetRequiredService<ILoggerFactory>().CreateLogger("Conduit.Log"),
            maxTopics: options.MaxTopics));
        services.AddSingleton<IExceptionMapper, LogExceptionMapper>(); // storage failures to statuses, for the log's calls
        services.AddSingleton(new ConsumeStreamGate(new ConsumeStreamLimits
        {
            MaxStreamsPerPrincipal = options.MaxConsumeStreamsPerPrincipal,
            BufferBytes = options.ConsumeStreamBufferBytes,
        }));
        services.AddSingleton<LogService>();
        services.AddSingleton<LogAdminService>();
        // Opened (and recovered) before the first call; a log folder that cannot be opened keeps
        // only the log down (UNAVAILABLE, NOT_SERVING), retried in the background.
        StorageGates.Add(services, new StorageGate("log-storage", "the log's storage", [typeof(LogService), typeof(LogAdminService)], (sp, _) =>
        {
            sp.GetRequiredService<ILogStorage>();
            return Task.CompletedTask;
        }, serve.DataDir));
    }

    public static void MapLog(WebApplication app)
    {
        app.MapGrpcService<LogService>();
        app.MapGrpcService<LogAdminService>();
    }
}
