using Google.Protobuf;

namespace Conduit.Rpc;

/// <summary>
/// A call that ended with a status other than OK. Thrown by clients; thrown by handlers to end a
/// call with that status (any other exception in a handler becomes UNKNOWN, with no stack trace
/// on the wire).
/// </summary>
public class RpcException : Exception
{
    public RpcException(Status status, Metadata? trailers = null, string? message = null, Exception? innerException = null)
        : base(message ?? status.ToString(), innerException)
    {
        Status = status;
        Trailers = trailers ?? new Metadata();
    }

    public RpcException(StatusCode code, string detail = "") : this(new Status(code, detail)) { }

    public Status Status { get; }

    public StatusCode StatusCode => Status.Code;

    /// <summary>Trailers received with the status (client) or to send with it (server).</summary>
    public Metadata Trailers { get; }

    /// <summary>An exception carrying rich details (see <see cref="Status.WithDetails"/>).</summary>
    public static RpcException WithDetails(StatusCode code, string detail, params IMessage[] details) =>
        new(Status.WithDetails(code, detail, details));

    /// <summary>The first rich detail of type <typeparamref name="T"/>, or null.</summary>
    public T? GetDetail<T>() where T : class, IMessage<T>, new() => Status.GetDetail<T>();
}
