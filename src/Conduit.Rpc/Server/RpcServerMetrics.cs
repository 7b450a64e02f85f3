namespace Conduit.Rpc.Server;

/// <summary>Counters of one server, read by hosting (shutdown summary) and, later, by metrics exporters.</summary>
public sealed class RpcServerMetrics
{
    private long _callsCompleted;
    private long _callsFailed;

    /// <summary>Calls that ended, with any status.</summary>
    public long CallsCompleted => Interlocked.Read(ref _callsCompleted);

    /// <summary>Calls that ended with a status other than OK.</summary>
    public long CallsFailed => Interlocked.Read(ref _callsFailed);

    internal void OnCallCompleted(StatusCode code)
    {
        Interlocked.Increment(ref _callsCompleted);
        if (code != StatusCode.OK) Interlocked.Increment(ref _callsFailed);
    }
}
