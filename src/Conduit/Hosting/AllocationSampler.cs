using System.Collections.Concurrent;
using System.Diagnostics.Tracing;

namespace Conduit.Hosting;

/// <summary>
/// A profiling aid for `conduit serve` (CONDUIT_ALLOC_TRACE=1): tallies the runtime's GC
/// AllocationTick samples (one per ~100 KB allocated) by type and prints the top 25 at shutdown.
/// Sampled, so small types are over- or under-counted; good for finding what dominates.
/// </summary>
internal sealed class AllocationSampler : EventListener
{
    public ConcurrentDictionary<string, long> Bytes { get; } = new();

    protected override void OnEventSourceCreated(EventSource source)
    {
        if (source.Name == "Microsoft-Windows-DotNETRuntime") EnableEvents(source, EventLevel.Verbose, (EventKeywords)0x1);
    }

    public ConcurrentDictionary<string, long> Collections { get; } = new();

    protected override void OnEventWritten(EventWrittenEventArgs e)
    {
        if (e.EventName is "GCStart_V2" or "GCStart_V1" && e.Payload is not null)
        {
            // Which generation, and why (reasons as in the runtime's GC_REASON: 0 small alloc,
            // 1 induced, 4 large alloc, 6 LOH out of space, 7 induced not forced, ...).
            var depth = e.Payload[e.PayloadNames!.IndexOf("Depth")];
            var reason = e.Payload[e.PayloadNames!.IndexOf("Reason")];
            Collections.AddOrUpdate($"gen{depth} reason {reason}", 1, (_, v) => v + 1);
            return;
        }
        if (e.EventName is not "GCAllocationTick_V4" and not "GCAllocationTick_V3" || e.Payload is null) return;
        var type = e.Payload[e.PayloadNames!.IndexOf("TypeName")]?.ToString() ?? "?";
        var amount = Convert.ToInt64(e.Payload[e.PayloadNames!.IndexOf("AllocationAmount64")]);
        Bytes.AddOrUpdate(type, amount, (_, v) => v + amount);
    }

    /// <summary>Forgets what was tallied so far (the start-up and warm-up of a load run).</summary>
    public void Reset()
    {
        Bytes.Clear();
        Collections.Clear();
    }

    /// <summary>The GCs and the top <paramref name="top"/> types; with <paramref name="calls"/>, also each type's estimated bytes per call.</summary>
    public void Print(long? calls = null, int top = 25)
    {
        foreach (var (what, count) in Collections.OrderBy(kv => kv.Key)) Console.WriteLine($"{count,10} GCs  {what}");
        foreach (var (type, bytes) in Bytes.OrderByDescending(kv => kv.Value).Take(top))
        {
            Console.WriteLine(calls is { } n ? $"{bytes / 1024,10} KiB {bytes / n,6} B/call  {type}" : $"{bytes / 1024,10} KiB  {type}");
        }
        if (calls is { } total) Console.WriteLine($"{Bytes.Values.Sum() / 1024,10} KiB {Bytes.Values.Sum() / total,6} B/call  (all sampled types)");
    }
}
