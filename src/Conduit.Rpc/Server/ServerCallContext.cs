using Microsoft.AspNetCore.Http;

namespace Conduit.Rpc.Server;

/// <summary>What a handler knows about its call and how it shapes the response.</summary>
public abstract class ServerCallContext
{
    private static readonly AsyncLocal<ServerCallContext?> s_current = new();

    /// <summary>
    /// The call whose handler is running on this async flow, or null. Outgoing calls made from a
    /// handler use it to inherit the remaining deadline and the cancellation of the incoming call.
    /// </summary>
    public static ServerCallContext? Current
    {
        get => s_current.Value;
        internal set => s_current.Value = value;
    }

    /// <summary>The method's path, "/package.Service/Method".</summary>
    public abstract string Method { get; }

    /// <summary>The :authority the client called.</summary>
    public abstract string Host { get; }

    /// <summary>The remote address, "ipv4:127.0.0.1:5000" or "ipv6:[::1]:5000".</summary>
    public abstract string Peer { get; }

    /// <summary>The call's deadline in UTC, DateTime.MaxValue when the client set none.</summary>
    public abstract DateTime Deadline { get; }

    /// <summary>Request metadata, without the protocol's own headers.</summary>
    public abstract Metadata RequestHeaders { get; }

    /// <summary>Fires when the client cancels, the deadline passes, or the server shuts down.</summary>
    public abstract CancellationToken CancellationToken { get; }

    /// <summary>Trailers sent with the status at the end of the call.</summary>
    public abstract Metadata ResponseTrailers { get; }

    /// <summary>The status the call ends with when the handler returns normally.</summary>
    public abstract Status Status { get; set; }

    /// <summary>
    /// The algorithm (e.g. "gzip") used to compress response messages, when the client accepts it;
    /// set before the first response message is written. Null (the default) sends them as they are.
    /// </summary>
    public abstract string? ResponseCompression { get; set; }

    /// <summary>Whether the most recently read request message arrived compressed.</summary>
    public abstract bool LastRequestCompressed { get; }

    /// <summary>Sends response headers now; at most once, before any response message.</summary>
    public abstract Task WriteResponseHeadersAsync(Metadata responseHeaders);

    /// <summary>The underlying ASP.NET Core request, for what the gRPC abstraction does not cover.</summary>
    public abstract HttpContext GetHttpContext();

    /// <summary>Whether the call has ended (work it started may still hold this context).</summary>
    internal virtual bool IsCompleted => false;

    /// <summary>
    /// Whether the call's token fired because its deadline passed. Safe from any thread at any
    /// time, also while or after the call completes (inner calls ask it from the token's callback).
    /// </summary>
    internal virtual bool DeadlineReached => false;
}
