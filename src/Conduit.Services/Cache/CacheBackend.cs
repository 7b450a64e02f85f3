namespace Conduit.Services.Cache;

/// <summary>What a store attempt came to.</summary>
public enum StoreOutcome
{
    /// <summary>Stored (or, in a dry run, would have been).</summary>
    Stored,
    /// <summary>The key is new and the account already holds its maximum number of keys.</summary>
    KeyQuotaExceeded,
    /// <summary>The entry alone is larger than the whole cache may hold.</summary>
    LargerThanCache,
    /// <summary>
    /// The cache is full and the entry would fit only by evicting other accounts below their fair
    /// share of it (the memory backend); the account's own entries were not enough.
    /// </summary>
    OverShare,
}

/// <summary>
/// Where cache entries live, in one namespace per account: the same key under two accounts is
/// two entries. Implementations enforce the key quota atomically with the store itself, so many
/// concurrent stores never take an account past it. No gRPC types here.
/// </summary>
public interface ICacheBackend : IAsyncDisposable
{
    /// <summary>
    /// Stores <paramref name="value"/> (never modified afterwards by the caller) under
    /// <paramref name="key"/> of <paramref name="account"/>, unless the key is new and the
    /// account already holds <paramref name="maxKeys"/> live keys. With <paramref name="dryRun"/>
    /// it decides the same way and changes nothing.
    /// </summary>
    Task<StoreOutcome> StoreAsync(string account, string key, byte[] value, TimeSpan? ttl, long maxKeys, bool dryRun, CancellationToken cancellationToken);

    /// <summary>The live value, or null when the key is missing or expired.</summary>
    Task<byte[]?> GetAsync(string account, string key, CancellationToken cancellationToken);

    /// <summary>Removes the key; false when it was not there. A dry run only tells whether it was.</summary>
    Task<bool> DeleteAsync(string account, string key, bool dryRun, CancellationToken cancellationToken);

    /// <summary>
    /// The account's live entries, read lazily a page at a time: memory stays bounded however
    /// many keys there are. Not a snapshot: every key live for the whole enumeration appears
    /// exactly once, keys stored or removed meanwhile may or may not.
    /// </summary>
    IAsyncEnumerable<KeyValuePair<string, byte[]>> DumpAsync(string account, CancellationToken cancellationToken);
}

/// <summary>The backend cannot be reached (a retry may work).</summary>
public sealed class CacheBackendUnavailableException(string message, Exception? inner = null) : Exception(message, inner)
{
}
