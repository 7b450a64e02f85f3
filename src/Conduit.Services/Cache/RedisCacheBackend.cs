using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;

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

    private readonly RespClient _redis;
    private readonly string _prefix;
    private readonly string _storeSha = Sha1(StoreScript);
    private readonly string _deleteSha = Sha1(DeleteScript);

    public RedisCacheBackend(Uri address, string keyPrefix = "conduit:cache:", int connections = 4)
    {
        _redis = new RespClient(address, connections);
        _prefix = keyPrefix;
    }

    public string Endpoint => _redis.Endpoint;

    public async Task<StoreOutcome> StoreAsync(string account, string key, byte[] value, TimeSpan? ttl, long maxKeys, bool dryRun, CancellationToken cancellationToken)
    {
        var ttlMs = ttl is { } t && t > TimeSpan.Zero ? Math.Max(1L, (long)Math.Ceiling(t.TotalMilliseconds)) : 0L;
        var reply = await EvalAsync(_storeSha, StoreScript, [ValueKey(account, key), IndexKey(account)],
            [key, value, ttlMs, maxKeys, dryRun ? "1" : "0", ValuePrefix(account)], cancellationToken).ConfigureAwait(false);
        return reply.Integer == 1 ? StoreOutcome.Stored : StoreOutcome.KeyQuotaExceeded;
    }

    public async Task<byte[]?> GetAsync(string account, string key, CancellationToken cancellationToken)
    {
        var reply = await Execute(["GET", ValueKey(account, key)], cancellationToken).ConfigureAwait(false);
        return reply.Bulk;
    }

    public async Task<bool> DeleteAsync(string account, string key, bool dryRun, CancellationToken cancellationToken)
    {
        var reply = await EvalAsync(_deleteSha, DeleteScript, [ValueKey(account, key), IndexKey(account)], [key, dryRun ? "1" : "0"], cancellationToken).ConfigureAwait(false);
        return reply.Integer == 1;
    }

    public async IAsyncEnumerable<KeyValuePair<string, byte[]>> DumpAsync(string account, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var index = IndexKey(account);
        var cursor = "0";
        do
        {
            // ZSCAN may return a member twice across pages (while the set is rehashed): skip
            // repeats within a page; across pages Redis only promises "at least once".
            var page = await Execute(["ZSCAN", index, cursor, "COUNT", DumpPage], cancellationToken).ConfigureAwait(false);
            cursor = Encoding.ASCII.GetString(page.Items![0].Bulk!);
            var pairs = page.Items[1].Items!;
            var keys = new List<string>(pairs.Length / 2);
            for (var i = 0; i < pairs.Length; i += 2) keys.Add(Encoding.UTF8.GetString(pairs[i].Bulk!));
            if (keys.Count == 0) continue;
            var mget = new object[keys.Count + 1];
            mget[0] = "MGET";
            for (var i = 0; i < keys.Count; i++) mget[i + 1] = ValueKey(account, keys[i]);
            var values = await Execute(mget, cancellationToken).ConfigureAwait(false);
            for (var i = 0; i < keys.Count; i++)
            {
                if (values.Items![i].Bulk is { } value) yield return new KeyValuePair<string, byte[]>(keys[i], value);
            }
        }
        while (cursor != "0");
    }

    public ValueTask DisposeAsync() => _redis.DisposeAsync();

    private string ValuePrefix(string account) => _prefix + "{" + account + "}:v:";

    private string ValueKey(string account, string key) => ValuePrefix(account) + key;

    private string IndexKey(string account) => _prefix + "{" + account + "}:keys";

    private async Task<RespValue> EvalAsync(string sha, string script, string[] keys, object[] args, CancellationToken cancellationToken)
    {
        object[] command = [sha, keys.Length, .. keys, .. args];
        try
        {
            return await Execute(["EVALSHA", .. command], cancellationToken).ConfigureAwait(false);
        }
        catch (RedisErrorException ex) when (ex.Message.StartsWith("NOSCRIPT", StringComparison.Ordinal))
        {
            command[0] = script;
            return await Execute(["EVAL", .. command], cancellationToken).ConfigureAwait(false);
        }
    }

    private Task<RespValue> Execute(object[] args, CancellationToken cancellationToken) => _redis.ExecuteAsync(args, cancellationToken);

    private static string Sha1(string script) => Convert.ToHexStringLower(SHA1.HashData(Encoding.UTF8.GetBytes(script)));
}
