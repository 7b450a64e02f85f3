using System.Diagnostics.Metrics;

namespace Conduit.Storage.Log;

/// <summary>
/// The log engine's counters, on the process-wide meter "Conduit.Log" (System.Diagnostics.Metrics,
/// part of the runtime: the host decides whether and where they are exported). Each counts with
/// one Add and a topic tag; with no listener an Add returns at once.
/// </summary>
public static class LogMetrics
{
    public const string MeterName = "Conduit.Log";

    private static readonly Meter Meter = new(MeterName);

    /// <summary>Records appended, per topic.</summary>
    internal static readonly Counter<long> Appends = Meter.CreateCounter<long>("conduit.log.appends", "{record}", "Records appended to the log");

    /// <summary>Bytes appended (record frames as stored), per topic.</summary>
    internal static readonly Counter<long> AppendedBytes = Meter.CreateCounter<long>("conduit.log.appended", "By", "Bytes appended to the log's store files");

    /// <summary>fsyncs of a store file by group commit or the interval flush, per topic.</summary>
    internal static readonly Counter<long> Fsyncs = Meter.CreateCounter<long>("conduit.log.fsyncs", "{fsync}", "fsyncs issued by group commit and interval flushes");

    /// <summary>Idempotent producers' retries answered with the records' offsets instead of appending them again, per topic.</summary>
    internal static readonly Counter<long> Duplicates = Meter.CreateCounter<long>("conduit.log.duplicates", "{record}", "Retried records of idempotent producers that were not appended again");

    /// <summary>Idempotent produce calls held because they reached their topic ahead of their producer's next sequence (the service's SequenceHold), per topic.</summary>
    public static readonly Counter<long> Held = Meter.CreateCounter<long>("conduit.log.held", "{request}", "Idempotent produce requests that arrived ahead of their producer's next sequence and were held");

    public static KeyValuePair<string, object?> Topic(string name) => new("topic", name);
}
