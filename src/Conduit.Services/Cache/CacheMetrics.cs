using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Conduit.Services.Cache;

/// <summary>
/// The cache's counters, on the process-wide meter "Conduit.Cache" (System.Diagnostics.Metrics:
/// the host decides whether and where they are exported). Each is one Add on the call's path.
/// </summary>
public static class CacheMetrics
{
    public const string MeterName = "Conduit.Cache";

    private static readonly Meter Meter = new(MeterName);

    /// <summary>The cache's spans (the Accounts lookup), for the host's tracing.</summary>
    public static readonly ActivitySource Source = new(MeterName);

    /// <summary>Get calls that found a live value.</summary>
    internal static readonly Counter<long> Hits = Meter.CreateCounter<long>("conduit.cache.hits", "{call}", "Get calls that found the key");

    /// <summary>Get calls that found no value (missing or expired).</summary>
    internal static readonly Counter<long> Misses = Meter.CreateCounter<long>("conduit.cache.misses", "{call}", "Get calls that found no live value");

    /// <summary>Entries the embedded backend evicted to stay under its memory bound.</summary>
    internal static readonly Counter<long> Evictions = Meter.CreateCounter<long>("conduit.cache.evictions", "{entry}", "Entries evicted to stay under Conduit:Cache:MaxMemoryBytes (embedded backend)");

    /// <summary>Calls refused by a quota, tagged with which one.</summary>
    internal static readonly Counter<long> QuotaRejections = Meter.CreateCounter<long>("conduit.cache.quota_rejections", "{call}", "Calls refused by a quota (tag quota)");

    /// <summary>Token lookups that called the Accounts service (not answered from memory).</summary>
    internal static readonly Counter<long> AccountsCalls = Meter.CreateCounter<long>("conduit.cache.accounts_calls", "{call}", "Token lookups that called the Accounts service");

    internal static void Rejected(string quota) => QuotaRejections.Add(1, new KeyValuePair<string, object?>("quota", quota));
}
