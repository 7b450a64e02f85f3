using Conduit.Rpc.Server;

namespace Conduit.Rpc.Client;

/// <summary>Per-call settings.</summary>
public readonly record struct CallOptions
{
    public CallOptions(Metadata? headers = null, DateTime? deadline = null, CancellationToken cancellationToken = default, string? compression = null)
    {
        Headers = headers;
        Deadline = deadline;
        CancellationToken = cancellationToken;
        Compression = compression;
    }

    /// <summary>Request metadata.</summary>
    public Metadata? Headers { get; init; }

    /// <summary>
    /// When the call must be over (UTC); sent as grpc-timeout and enforced locally: the call fails
    /// with DEADLINE_EXCEEDED when it passes, whatever the server does. Inside a handler, a call
    /// never outlives the incoming call's deadline.
    /// </summary>
    public DateTime? Deadline { get; init; }

    /// <summary>Cancels the call (CANCELLED).</summary>
    public CancellationToken CancellationToken { get; init; }

    /// <summary>Compress request messages with this algorithm ("gzip", "deflate"); null sends them as they are.</summary>
    public string? Compression { get; init; }

    /// <summary>
    /// Set to make a call inside a handler independent of the incoming call: it then does not
    /// inherit its deadline or cancellation (default false: it inherits both).
    /// </summary>
    public bool DetachFromServerCall { get; init; }

    /// <summary>A deadline <paramref name="timeout"/> from now.</summary>
    public CallOptions WithTimeout(TimeSpan timeout) => this with { Deadline = DateTime.UtcNow + timeout };

    // A call started by background work that outlived its handler has no parent any more.
    internal ServerCallContext? Parent => DetachFromServerCall || ServerCallContext.Current is not { IsCompleted: false } parent ? null : parent;
}
