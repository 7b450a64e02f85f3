namespace Conduit.Rpc.Server;

/// <summary>
/// Dry run: a client sends the metadata <c>dry-run: true</c> on a mutating call to have it
/// validated completely (authentication, quotas, sizes, conflicts) and answered as if done,
/// while nothing is changed. Every mutating RPC of every service honours it the same way: check
/// <see cref="IsRequested"/> right before the first change and return the would-be result.
/// </summary>
public static class DryRun
{
    public const string HeaderName = "dry-run";

    /// <summary>Whether the call asked for a dry run ("true" or "1", any case).</summary>
    public static bool IsRequested(ServerCallContext context)
    {
        var value = context.RequestHeaders.GetValue(HeaderName);
        return value is not null && (value.Equals("true", StringComparison.OrdinalIgnoreCase) || value == "1");
    }

    /// <summary>The metadata entry a client adds to ask for a dry run.</summary>
    public static Metadata.Entry Header => new(HeaderName, "true");
}
