using Google.Protobuf.WellKnownTypes;
using Google.Rpc;

namespace Conduit.Grpc;

/// <summary>Builders for the standard google.rpc error details.</summary>
public static class Details
{
    public static ErrorInfo ErrorInfo(string reason, string domain, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var info = new ErrorInfo { Reason = reason, Domain = domain };
        if (metadata is not null) foreach (var (key, value) in metadata) info.Metadata[key] = value;
        return info;
    }

    public static BadRequest BadRequest(params (string Field, string Description)[] violations)
    {
        var request = new BadRequest();
        foreach (var (field, description) in violations)
        {
            request.FieldViolations.Add(new BadRequest.Types.FieldViolation { Field = field, Description = description });
        }
        return request;
    }

    public static RetryInfo RetryInfo(TimeSpan retryDelay) => new() { RetryDelay = Duration.FromTimeSpan(retryDelay) };

    public static QuotaFailure QuotaFailure(params (string Subject, string Description)[] violations)
    {
        var failure = new QuotaFailure();
        foreach (var (subject, description) in violations)
        {
            failure.Violations.Add(new QuotaFailure.Types.Violation { Subject = subject, Description = description });
        }
        return failure;
    }

    public static LocalizedMessage LocalizedMessage(string message, string locale = "en-US") =>
        new() { Locale = locale, Message = message };
}
