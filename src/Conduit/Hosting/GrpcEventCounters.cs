using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Diagnostics.Tracing;

namespace Conduit.Hosting;

/// <summary>
/// grpc-dotnet's own call counters, as metrics. grpc-dotnet has no Meter: its server and client
/// publish EventCounters (what `dotnet-counters monitor Grpc.AspNetCore.Server` shows). This
/// listener asks for them once a second and serves the latest values as observable instruments
/// on the meter "Conduit.GrpcEventCounters": grpc.aspnetcore.server.calls, .calls.current,
/// .calls.failed, .calls.deadline_exceeded, .calls.unimplemented, .messages.sent,
/// .messages.received, and the same (but unimplemented) under grpc.net.client. One per process (the counters are),
/// started by the first host that serves metrics; values lag by up to a second.
/// </summary>
internal sealed class GrpcEventCounters : EventListener
{
    public const string MeterName = "Conduit.GrpcEventCounters";

    private static readonly string[] Sources = ["Grpc.AspNetCore.Server", "Grpc.Net.Client"];

    // grpc-dotnet's counter name → ours (after the source's prefix), and whether it only grows.
    private static readonly (string Counter, string Name, bool Cumulative)[] Counters =
    [
        ("total-calls", "calls", true),
        ("current-calls", "calls.current", false),
        ("calls-failed", "calls.failed", true),
        ("calls-deadline-exceeded", "calls.deadline_exceeded", true),
        ("calls-unimplemented", "calls.unimplemented", true),
        ("messages-sent", "messages.sent", true),
        ("messages-received", "messages.received", true),
    ];

    private static readonly Lazy<GrpcEventCounters> Instance = new(() => new GrpcEventCounters());

    // EventListener offers sources from its base constructor, before fields are set: static.
    private static readonly ConcurrentDictionary<(string Source, string Counter), long> Values = new();
    private static readonly Meter Meter = new(MeterName);

    static GrpcEventCounters()
    {
        foreach (var source in Sources)
        {
            var prefix = source.ToLowerInvariant() + ".";
            foreach (var (counter, name, cumulative) in Counters)
            {
                if (counter == "calls-unimplemented" && source != "Grpc.AspNetCore.Server") continue; // a server's counter only
                var key = (source, counter);
                if (cumulative) Meter.CreateObservableCounter(prefix + name, () => Values.GetValueOrDefault(key), "{count}", $"grpc-dotnet's {source} EventCounter '{counter}'");
                else Meter.CreateObservableUpDownCounter(prefix + name, () => Values.GetValueOrDefault(key), "{call}", $"grpc-dotnet's {source} EventCounter '{counter}'");
            }
        }
    }

    /// <summary>Starts the listener (once per process).</summary>
    public static void Start() => _ = Instance.Value;

    protected override void OnEventSourceCreated(EventSource eventSource)
    {
        if (!Sources.Contains(eventSource.Name)) return;
        // Critical: no event of grpc-dotnet's is written (they are all Verbose), only the counters.
        EnableEvents(eventSource, EventLevel.Critical, EventKeywords.None, new Dictionary<string, string?> { ["EventCounterIntervalSec"] = "1" });
    }

    protected override void OnEventWritten(EventWrittenEventArgs e)
    {
        if (e.EventName != "EventCounters" || e.Payload is not [IDictionary<string, object?> payload, ..]) return;
        if (payload.TryGetValue("Name", out var name) && name is string counter && payload.TryGetValue("Mean", out var mean) && mean is double value)
        {
            Values[(e.EventSource.Name, counter)] = (long)value;
        }
    }
}
