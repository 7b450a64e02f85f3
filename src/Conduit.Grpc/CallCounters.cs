using Grpc.Core;

namespace Conduit.Grpc;

/// <summary>
/// Calls a server has completed and how many failed, counted by <see cref="LoggingInterceptor"/>:
/// what `conduit serve` prints at shutdown and on SIGUSR1.
/// </summary>
public sealed class CallCounters
{
    private long _completed;
    private long _failed;

    /// <summary>Calls that ended, with any status.</summary>
    public long Completed => Interlocked.Read(ref _completed);

    /// <summary>Calls that ended with a status other than OK.</summary>
    public long Failed => Interlocked.Read(ref _failed);

    public void Record(StatusCode code)
    {
        Interlocked.Increment(ref _completed);
        if (code != StatusCode.OK) Interlocked.Increment(ref _failed);
    }
}
