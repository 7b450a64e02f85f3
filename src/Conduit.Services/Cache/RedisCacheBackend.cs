using System.Runtime.CompilerServices;
using System.Security.Cryptography.X509Certificates;
using StackExchange.Redis;

namespace Conduit.Services.Cache;

/// <summary>
/// Cache entries in Redis, so many stateless `conduit serve` instances share one cache. Per
/// account (the hash tag keeps an account's keys in one cluster slot):
/// <list type="bullet">
/// <item><c>{prefix}{account}:v:{key}</c> — the value, with Redis's own expiry (PX) for a TTL;</item>
/// <item><c>{prefix}{account}:keys</c> — a sorted set of the account's keys scored by expiry time
/// in Unix ms (+inf without a TTL): what the key quota counts and what Dump walks.</item>
/// </list>
/// Stores and deletes are Lua scripts, so "count the live keys, then add one" is atomic across
/// every instance: the quota is exact. Expiry times come from the Redis server's clock (TIME),
/// never from an instance's. The memory bound is Redis's own: set <c>maxmemory</c> and
/// <c>maxmemory-policy volatile-lru</c> or <c>allkeys-lru</c>; a value Redis evicts stops being
/// counted the next time its account reaches its quota.
/// <para>
/// The client is StackExchange.Redis: one multiplexed connection, connected on first use and
/// reconnected in the background; while it is down every command fails at once
/// (<see cref="BacklogPolicy.FailFast"/>) with <see cref="CacheBackendUnavailableException"/>,
/// never queued behind a dead server.
/// </para>
/// </summary>
public sealed class RedisCacheBackend : ICacheBackend
{
    // KEYS: value key, index key. ARGV: key, value, ttl ms (0: none), max keys, dry run (0/1), value key prefix.
    private const string StoreScript = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
        if redis.call('EXISTS', KEYS[1]) == 0 then
          local max = tonumber(ARGV[4])
          local n = redis.call('ZCARD', KEYS[2]) - (redis.call('ZSCORE', KEYS[2], ARGV[1]) and 1 or 0)
          if n >= max then
            for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
              if m ~= ARGV[1] and redis.call('EXISTS', ARGV[6] .. m) == 0 then
                redis.call('ZREM', KEYS[2], m)
                n = n - 1
              end
            end
            if n >= max then return 0 end
          end
        end
        if ARGV[5] == '1' then return 1 end
        local ttl = tonumber(ARGV[3])
        if ttl > 0 then
          redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
          redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
        else
          redis.call('SET', KEYS[1], ARGV[2])
          redis.call('ZADD', KEYS[2], '+inf', ARGV[1])
        end
        return 1
        """;

    // KEYS: value key, index key. ARGV: key, dry run (0/1).
    private const string DeleteScript = """
        local n = redis.call('EXISTS', KEYS[1])
        if ARGV[2] == '1' then return n end
        redis.call('ZREM', KEYS[2], ARGV[1])
        if n == 1 then redis.call('DEL', KEYS[1]) end
        return n
        """;

    private const int DumpPage = 256;

    private readonly ConfigurationOptions _configuration;
    private readonly Lazy<Task<ConnectionMultiplexer>> _connection;
    private readonly string _prefix;

    /// <param name="address">redis://[[user]:password@]host[:port][/db], or rediss://... for TLS.</param>
    /// <param name="keyPrefix">The prefix of every Redis key.</param>
    /// <param name="tlsCaFile">A PEM certificate to trust as the issuer of the server's certificate (rediss:// only), besides the system's roots.</param>
    public RedisCacheBackend(Uri address, string keyPrefix = "conduit:cache:", string? tlsCaFile = null)
    {
        _configuration = Configure(address, tlsCaFile);
        _prefix = keyPrefix;
        _connection = new Lazy<Task<ConnectionMultiplexer>>(() => ConnectionMultiplexer.ConnectAsync(_configuration));
        Endpoint = $"{address.Host}:{(address.IsDefaultPort || address.Port <= 0 ? DefaultPort : address.Port)}/{_configuration.DefaultDatabase ?? 0}";
    }

    private const int DefaultPort = 6379;

    /// <summary>host:port/db, for messages (never the password).</summary>
    public string Endpoint { get; }

    /// <summary>The connection (made on first use): for operators' diagnostics and tests that watch it reconnect.</summary>
    public Task<ConnectionMultiplexer> ConnectionAsync() => _connection.Value;

    /// <summary>
    /// StackExchange.Redis settings from a redis:// or rediss:// URI: the user and password in the
    /// URI's user info (percent-encoded; <c>redis://:password@host</c> for a server with only
    /// <c>requirepass</c>), the database as its path, TLS for rediss://.
    /// </summary>
    public static ConfigurationOptions Configure(Uri address, string? tlsCaFile = null)
    {
        ArgumentNullException.ThrowIfNull(address);
        var tls = address.Scheme.Equals("rediss", StringComparison.OrdinalIgnoreCase);
        if (!tls && !address.Scheme.Equals("redis", StringComparison.OrdinalIgnoreCase))
        {
            throw new ArgumentException($"Redis address '{address.GetLeftPart(UriPartial.Scheme)}...' must be redis:// or rediss:// (TLS).", nameof(address));
        }
        var options = new ConfigurationOptions
        {
            // Connect in the background and keep trying; a command while there is no connection
            // fails at once instead of waiting in a backlog for its timeout.
            AbortOnConnectFail = false,
            BacklogPolicy = BacklogPolicy.FailFast,
            ConnectTimeout = 5000,
            AsyncTimeout = 5000,
            ReconnectRetryPolicy = new LinearRetry(1000),
            Ssl = tls,
            ClientName = "conduit-cache",
        };
        options.EndPoints.Add(address.Host.Trim('[', ']'), address.IsDefaultPort || address.Port <= 0 ? DefaultPort : address.Port);
        if (address.UserInfo.Length > 0)
        {
            var colon = address.UserInfo.IndexOf(':', StringComparison.Ordinal);
            var user = Uri.UnescapeDataString(colon < 0 ? address.UserInfo : address.UserInfo[..colon]);
            if (colon < 0) throw new ArgumentException("A Redis address with user info needs a password: redis://user:password@host or redis://:password@host.", nameof(address));
            options.User = user.Length == 0 ? null : user;
            options.Password = Uri.UnescapeDataString(address.UserInfo[(colon + 1)..]);
        }
        var path = address.AbsolutePath.Trim('/');
        if (path.Length > 0)
        {
            if (!int.TryParse(path, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var database))
            {
                throw new ArgumentException($"The Redis database '{path}' must be a number (redis://host:port/0).", nameof(address));
            }
            options.DefaultDatabase = database;
        }
        if (tlsCaFile is { Length: > 0 })
        {
            if (!tls) throw new ArgumentException("A TLS CA file is set but the Redis address is not rediss://.", nameof(tlsCaFile));
            options.TrustIssuer(X509CertificateLoader.LoadCertificateFromFile(tlsCaFile));
        }
        return options;
    }

    public Task<StoreOutcome> StoreAsync(string account, string key, byte[] value, TimeSpan? ttl, long maxKeys, bool dryRun, CancellationToken cancellationToken)
    {
        var ttlMs = ttl is { } t && t > TimeSpan.Zero ? Math.Max(1L, (long)Math.Ceiling(t.TotalMilliseconds)) : 0L;
        return Run(async db =>
        {
            var reply = await db.ScriptEvaluateAsync(StoreScript, [ValueKey(account, key), IndexKey(account)],
                [key, value, ttlMs, maxKeys, dryRun ? "1" : "0", ValuePrefix(account)]).WaitAsync(cancellationToken).ConfigureAwait(false);
            return (long)reply == 1 ? StoreOutcome.Stored : StoreOutcome.KeyQuotaExceeded;
        }, cancellationToken);
    }

    public Task<byte[]?> GetAsync(string account, string key, CancellationToken cancellationToken) =>
        Run(async db => (byte[]?)await db.StringGetAsync(ValueKey(account, key)).WaitAsync(cancellationToken).ConfigureAwait(false), cancellationToken);

    public Task<bool> DeleteAsync(string account, string key, bool dryRun, CancellationToken cancellationToken) =>
        Run(async db => (long)await db.ScriptEvaluateAsync(DeleteScript, [ValueKey(account, key), IndexKey(account)], [key, dryRun ? "1" : "0"])
            .WaitAsync(cancellationToken).ConfigureAwait(false) == 1, cancellationToken);

    public async IAsyncEnumerable<KeyValuePair<string, byte[]>> DumpAsync(string account, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var db = await Run(Task.FromResult, cancellationToken).ConfigureAwait(false);
        // ZSCAN a page at a time (StackExchange.Redis follows the cursor), then one MGET per page.
        // ZSCAN promises every member present for the whole scan at least once; a member may come
        // twice while the set is rehashed, so repeats within a page are dropped.
        await using var members = db.SortedSetScanAsync(IndexKey(account), pageSize: DumpPage).GetAsyncEnumerator(cancellationToken);
        var keys = new List<string>(DumpPage);
        while (true)
        {
            keys.Clear();
            while (keys.Count < DumpPage && await Run(async _ => await members.MoveNextAsync().ConfigureAwait(false), cancellationToken).ConfigureAwait(false))
            {
                var member = (string)members.Current.Element!;
                if (!keys.Contains(member)) keys.Add(member);
            }
            if (keys.Count == 0) yield break;
            var valueKeys = new RedisKey[keys.Count];
            for (var i = 0; i < keys.Count; i++) valueKeys[i] = ValueKey(account, keys[i]);
            var values = await Run(d => d.StringGetAsync(valueKeys).WaitAsync(cancellationToken), cancellationToken).ConfigureAwait(false);
            for (var i = 0; i < keys.Count; i++)
            {
                if ((byte[]?)values[i] is { } value) yield return new KeyValuePair<string, byte[]>(keys[i], value);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_connection.IsValueCreated) return;
        try
        {
            await (await _connection.Value.ConfigureAwait(false)).DisposeAsync().ConfigureAwait(false);
        }
        catch (RedisException)
        {
            // Never connected: nothing to close.
        }
    }

    private string ValuePrefix(string account) => _prefix + "{" + account + "}:v:";

    private string ValueKey(string account, string key) => ValuePrefix(account) + key;

    private string IndexKey(string account) => _prefix + "{" + account + "}:keys";

    /// <summary>
    /// Runs one operation on the database; a connection that is down, refused (wrong password,
    /// TLS) or too slow becomes <see cref="CacheBackendUnavailableException"/>, which the cache's
    /// exception mapper answers UNAVAILABLE. The caller's cancellation passes as it is.
    /// </summary>
    private async Task<T> Run<T>(Func<IDatabase, Task<T>> operation, CancellationToken cancellationToken)
    {
        try
        {
            var connection = await _connection.Value.WaitAsync(cancellationToken).ConfigureAwait(false);
            return await operation(connection.GetDatabase()).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is RedisConnectionException or RedisTimeoutException or TimeoutException)
        {
            throw new CacheBackendUnavailableException($"Redis at {Endpoint} cannot answer: {ex.Message}", ex);
        }
    }
}
