namespace Conduit.Grpc;

/// <summary>
/// Client input quoted in a status: every message and detail that repeats what the client sent
/// goes through <see cref="Shorten"/>, so a 1 MB topic name or key cannot make a status larger
/// than a client's metadata limit (grpcio's is 8 KiB; the message travels in grpc-message and
/// again inside grpc-status-details-bin).
/// </summary>
public static class ClientInput
{
    /// <summary>The most characters of client input a status quotes.</summary>
    public const int MaxQuoted = 128;

    /// <summary>
    /// <paramref name="value"/> itself when it has at most <see cref="MaxQuoted"/> characters;
    /// otherwise its first ones (never half a surrogate pair) and "...".
    /// </summary>
    public static string Shorten(string? value)
    {
        if (value is null) return "";
        if (value.Length <= MaxQuoted) return value;
        var cut = char.IsHighSurrogate(value[MaxQuoted - 1]) ? MaxQuoted - 1 : MaxQuoted;
        return string.Concat(value.AsSpan(0, cut), "...");
    }
}
