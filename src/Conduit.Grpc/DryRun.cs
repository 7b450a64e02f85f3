using Grpc.AspNetCore.Server;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.AspNetCore.Http;

namespace Conduit.Grpc;

/// <summary>
/// Dry run: a client sends the metadata <c>dry-run: true</c> on a mutating call to have it
/// validated completely (authentication, quotas, sizes, conflicts) and answered as if done, while
/// nothing is changed. A method that honours it says so with <see cref="DryRunSupportedAttribute"/>
/// and checks <see cref="IsRequested"/> right before its first change; <see cref="DryRunInterceptor"/>
/// refuses a dry run of any other method, so a client never believes a real change was a rehearsal.
/// </summary>
public static class DryRun
{
    public const string HeaderName = "dry-run";

    private static readonly object s_key = new();

    /// <summary>The metadata entry a client adds to ask for a dry run.</summary>
    public static Metadata.Entry Header => new(HeaderName, "true");

    /// <summary>Whether the call asked for a dry run (checked and recorded by <see cref="DryRunInterceptor"/>).</summary>
    public static bool IsRequested(ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (context.UserState.TryGetValue(s_key, out var recorded)) return (bool)recorded;
        return Parse(context.RequestHeaders.GetValue(HeaderName), context.Method);
    }

    internal static void Record(ServerCallContext context, bool requested) => context.UserState[s_key] = requested;

    /// <summary>"true"/"1" and "false"/"0" (any case); anything else is INVALID_ARGUMENT, never a guess.</summary>
    internal static bool Parse(string? value, string method)
    {
        if (value is null) return false;
        if (value.Equals("true", StringComparison.OrdinalIgnoreCase) || value == "1") return true;
        if (value.Equals("false", StringComparison.OrdinalIgnoreCase) || value == "0") return false;
        throw RpcException.WithDetails(StatusCode.InvalidArgument,
            $"The dry-run metadata must be true or false, not '{ClientInput.Shorten(value)}'; {method} did nothing.",
            Details.BadRequest((HeaderName, "true or false")));
    }
}

/// <summary>Marks a service method that honours <see cref="DryRun"/>.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class DryRunSupportedAttribute : Attribute;

/// <summary>
/// Reads the dry-run metadata once per call: a malformed value, or a dry run of a method without
/// <see cref="DryRunSupportedAttribute"/>, ends the call with INVALID_ARGUMENT before the handler runs.
/// </summary>
public sealed class DryRunInterceptor : CallCheckInterceptor
{
    protected override void Check(ServerCallContext context)
    {
        // The header straight from the request: building context.RequestHeaders costs a copy of
        // every header, on every call.
        var http = context.GetHttpContext();
        var values = http.Request.Headers[DryRun.HeaderName];
        if (values.Count == 0) return;
        if (values.Count > 1)
        {
            // "false" then "true" must not make a real change the client also asked to rehearse.
            throw RpcException.WithDetails(StatusCode.InvalidArgument,
                $"The dry-run metadata was sent {values.Count} times; send it once. {context.Method} did nothing.",
                Details.BadRequest((DryRun.HeaderName, "at most one value")));
        }
        var requested = DryRun.Parse(values[0], context.Method);
        if (requested && http.GetEndpoint()?.Metadata.GetMetadata<DryRunSupportedAttribute>() is null)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument,
                $"{context.Method} has no dry run (it changes nothing, or cannot rehearse a change); nothing was done.",
                Details.BadRequest((DryRun.HeaderName, "not supported by this method")));
        }
        DryRun.Record(context, requested);
    }
}
