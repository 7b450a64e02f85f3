using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;

namespace Conduit.Rpc;

/// <summary>
/// The outcome of a call: a code, a human-readable message (sent percent-encoded as
/// grpc-message) and optional rich details (sent as google.rpc.Status in grpc-status-details-bin).
/// </summary>
public readonly record struct Status(StatusCode Code, string Detail = "")
{
    public static readonly Status DefaultSuccess = new(StatusCode.OK);

    /// <summary>The google.rpc.Status carried with this status, or null when there is none.</summary>
    public Google.Rpc.Status? RichStatus { get; init; }

    /// <summary>A status with rich details (ErrorInfo, BadRequest, RetryInfo, QuotaFailure, ...).</summary>
    public static Status WithDetails(StatusCode code, string detail, params IMessage[] details)
    {
        var rich = new Google.Rpc.Status { Code = (int)code, Message = detail };
        foreach (var d in details)
        {
            rich.Details.Add(Any.Pack(d));
        }
        return new Status(code, detail) { RichStatus = rich };
    }

    /// <summary>The first detail of type <typeparamref name="T"/>, or null.</summary>
    public T? GetDetail<T>() where T : class, IMessage<T>, new()
    {
        if (RichStatus is null) return null;
        foreach (var any in RichStatus.Details)
        {
            if (any.TryUnpack<T>(out var value)) return value;
        }
        return null;
    }

    public override string ToString() =>
        string.IsNullOrEmpty(Detail) ? $"Status(StatusCode=\"{Code}\")" : $"Status(StatusCode=\"{Code}\", Detail=\"{Detail}\")";
}
