namespace Conduit.Services.Cache;

/// <summary>Settings of the Cache service, bound from configuration section "Conduit:Cache".</summary>
public sealed class CacheOptions
{
    public const string Section = "Conduit:Cache";

    /// <summary>
    /// "memory" (the default: entries in this process), or a Redis server as a URI:
    /// <c>redis://[[user]:password@]host[:port][/db]</c>, <c>rediss://...</c> for TLS. The user and
    /// password are Redis's AUTH (percent-encode reserved characters); <c>redis://:password@host</c>
    /// for a server with only <c>requirepass</c>.
    /// </summary>
    public string Backend { get; set; } = "memory";

    /// <summary>The memory backend's bound for all accounts together; least recently used entries are evicted past it.</summary>
    public long MaxMemoryBytes { get; set; } = 256L * 1024 * 1024;

    /// <summary>Longest key, in UTF-8 bytes.</summary>
    public int MaxKeyBytes { get; set; } = 1024;

    /// <summary>Dumps one account may run at once; one more is answered RESOURCE_EXHAUSTED before any backend work.</summary>
    public int MaxConcurrentDumps { get; set; } = 4;

    public static readonly TimeSpan DefaultDumpIdleTimeout = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long a dump waits for a client that reads nothing (each entry's write is held back by
    /// HTTP/2 flow control) before it ends and frees the account's slot.
    /// </summary>
    public TimeSpan DumpIdleTimeout { get; set; } = DefaultDumpIdleTimeout;

    /// <summary>The Accounts service to call; null: the Accounts service of this same server (over loopback).</summary>
    public string? AccountsUrl { get; set; }

    /// <summary>The deadline of one Accounts lookup (shortened further by the caller's own deadline).</summary>
    public TimeSpan AccountsTimeout { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// How long a token's account (its quotas, or that it is unknown) is remembered before Accounts
    /// is asked again: a rotated or disabled token keeps working at most this long.
    /// </summary>
    public TimeSpan AccountsCacheTime { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>The prefix of every Redis key the Redis backend uses.</summary>
    public string RedisKeyPrefix { get; set; } = "conduit:cache:";

    /// <summary>
    /// A PEM certificate to trust as the issuer of the Redis server's certificate (rediss:// only),
    /// for a private CA; the system's trusted roots are always trusted.
    /// </summary>
    public string? RedisTlsCaFile { get; set; }

    /// <summary>The backend these options choose.</summary>
    public ICacheBackend CreateBackend(TimeProvider? time = null)
    {
        if (Backend.Equals("memory", StringComparison.OrdinalIgnoreCase)) return new MemoryCacheBackend(MaxMemoryBytes, time);
        if (Backend.StartsWith("redis://", StringComparison.OrdinalIgnoreCase) || Backend.StartsWith("rediss://", StringComparison.OrdinalIgnoreCase))
        {
            return new RedisCacheBackend(new Uri(Backend), RedisKeyPrefix, RedisTlsCaFile);
        }
        throw new ArgumentException($"Cache backend '{Backend}' must be \"memory\", redis://host:port or rediss://host:port.");
    }
}
