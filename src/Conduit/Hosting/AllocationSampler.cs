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

    private readonly long _start = System.Diagnostics.Stopwatch.GetTimestamp();
    private readonly ConcurrentQueue<string> _olderCollections = new();
    private int _lastDepth;

    protected override void OnEventWritten(EventWrittenEventArgs e)
    {
        if (e.EventName is "GCStart_V2" or "GCStart_V1" && e.Payload is not null)
        {
            // Which generation, and why (reasons as in the runtime's GC_REASON: 0 small alloc,
            // 1 induced, 4 large alloc, 6 LOH out of space, 7 induced not forced, ...).
            var depth = e.Payload[e.PayloadNames!.IndexOf("Depth")];
            var reason = e.Payload[e.PayloadNames!.IndexOf("Reason")];
            Collections.AddOrUpdate($"gen{depth} reason {reason}", 1, (_, v) => v + 1);
            _lastDepth = Convert.ToInt32(depth);
            return;
        }
        if (e.EventName is "GCHeapStats_V2" or "GCHeapStats_V1" && e.Payload is not null && _lastDepth >= 1)
        {
            // What gen1 and gen2 collections promote is what fills gen2 until it is collected.
            long Field(string name) => Convert.ToInt64(e.Payload[e.PayloadNames!.IndexOf(name)]);
            _olderCollections.Enqueue($"{System.Diagnostics.Stopwatch.GetElapsedTime(_start).TotalSeconds,8:0.0}s gen{_lastDepth}: promoted to gen1 "
                + $"{Field("TotalPromotedSize0") / 1024} KiB, to gen2 {Field("TotalPromotedSize1") / 1024} KiB; gen2 now {Field("GenerationSize2") / 1024} KiB");
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
        _olderCollections.Clear();
    }

    /// <summary>The GCs and the top <paramref name="top"/> types; with <paramref name="calls"/>, also each type's estimated bytes per call.</summary>
    public void Print(long? calls = null, int top = 25)
    {
        foreach (var (what, count) in Collections.OrderBy(kv => kv.Key)) Console.WriteLine($"{count,10} GCs  {what}");
        foreach (var line in _olderCollections) Console.WriteLine(line);
        foreach (var (type, bytes) in Bytes.OrderByDescending(kv => kv.Value).Take(top))
        {
            Console.WriteLine(calls is { } n ? $"{bytes / 1024,10} KiB {bytes / n,6} B/call  {type}" : $"{bytes / 1024,10} KiB  {type}");
        }
        if (calls is { } total) Console.WriteLine($"{Bytes.Values.Sum() / 1024,10} KiB {Bytes.Values.Sum() / total,6} B/call  (all sampled types)");
    }
}
