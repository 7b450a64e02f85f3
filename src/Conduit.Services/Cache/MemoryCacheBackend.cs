using System.Collections.Concurrent;
using System.Runtime.CompilerServices;

namespace Conduit.Services.Cache;

/// <summary>
/// The embedded cache: entries in process memory, bounded by <see cref="MaxBytes"/> for all
/// accounts together. Each entry is charged <see cref="EntryOverhead"/> bytes plus its key (UTF-16)
/// and value; when a store would go over the bound, the least recently used entries (of any
/// account) are evicted first. Expired entries are dropped when touched, when their account hits
/// its key quota, or when eviction reaches them. Every change happens under one lock, which makes
/// the key quota exact; reads of a dump walk a concurrent dictionary without it.
/// </summary>
public sealed class MemoryCacheBackend(long maxBytes, TimeProvider? time = null) : ICacheBackend
{
    /// <summary>Bytes charged per entry on top of key and value: object headers, links, dictionary slot.</summary>
    public const int EntryOverhead = 128;

    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly object _lock = new();
    private readonly Dictionary<string, Tenant> _tenants = new(StringComparer.Ordinal);
    private readonly LinkedList<Entry> _lru = new(); // most recently used first
    private long _bytes;

    public long MaxBytes { get; } = maxBytes > 0 ? maxBytes : throw new ArgumentOutOfRangeException(nameof(maxBytes));

    /// <summary>Bytes charged for the entries held now.</summary>
    public long UsedBytes { get { lock (_lock) return _bytes; } }

    /// <summary>Entries evicted to stay under <see cref="MaxBytes"/> since start.</summary>
    public long Evictions { get { lock (_lock) return _evictions; } }

    private long _evictions;

    public static long SizeOf(string key, byte[] value) => EntryOverhead + (2L * key.Length) + value.Length;

    public Task<StoreOutcome> StoreAsync(string account, string key, byte[] value, TimeSpan? ttl, long maxKeys, bool dryRun, CancellationToken cancellationToken)
    {
        var size = SizeOf(key, value);
        var now = _time.GetTimestamp();
        long expires = ttl is { } t && t > TimeSpan.Zero ? now + (long)(t.TotalSeconds * _time.TimestampFrequency) : long.MaxValue;
        lock (_lock)
        {
            if (!_tenants.TryGetValue(account, out var tenant))
            {
                tenant = new Tenant();
                if (!dryRun) _tenants.Add(account, tenant);
            }
            var exists = tenant.Entries.TryGetValue(key, out var existing) && existing.ExpiresAt > now;
            if (!exists && tenant.Entries.Count - (existing is null ? 0 : 1) >= maxKeys)
            {
                if (tenant.WithTtl > 0) PurgeExpired(tenant, now);
                if (tenant.Entries.Count - (tenant.Entries.ContainsKey(key) ? 1 : 0) >= maxKeys) return Task.FromResult(StoreOutcome.KeyQuotaExceeded);
            }
            if (size > MaxBytes) return Task.FromResult(StoreOutcome.LargerThanCache);
            if (dryRun) return Task.FromResult(StoreOutcome.Stored);

            if (existing is not null) Remove(tenant, existing);
            while (_bytes + size > MaxBytes && _lru.Last is { } oldest)
            {
                Remove(_tenants[oldest.Value.Account], oldest.Value);
                _evictions++;
                CacheMetrics.Evictions.Add(1);
            }
            var entry = new Entry(account, key, value, expires, size);
            entry.Node = _lru.AddFirst(entry);
            tenant.Entries[key] = entry;
            if (expires != long.MaxValue) tenant.WithTtl++;
            _bytes += size;
        }
        return Task.FromResult(StoreOutcome.Stored);
    }

    public Task<byte[]?> GetAsync(string account, string key, CancellationToken cancellationToken)
    {
        var now = _time.GetTimestamp();
        lock (_lock)
        {
            if (!_tenants.TryGetValue(account, out var tenant) || !tenant.Entries.TryGetValue(key, out var entry)) return Task.FromResult<byte[]?>(null);
            if (entry.ExpiresAt <= now)
            {
                Remove(tenant, entry);
                return Task.FromResult<byte[]?>(null);
            }
            _lru.Remove(entry.Node!);
            _lru.AddFirst(entry.Node!);
            return Task.FromResult<byte[]?>(entry.Value);
        }
    }

    public Task<bool> DeleteAsync(string account, string key, bool dryRun, CancellationToken cancellationToken)
    {
        var now = _time.GetTimestamp();
        lock (_lock)
        {
            if (!_tenants.TryGetValue(account, out var tenant) || !tenant.Entries.TryGetValue(key, out var entry)) return Task.FromResult(false);
            var live = entry.ExpiresAt > now;
            if (!dryRun || !live) Remove(tenant, entry);
            return Task.FromResult(live);
        }
    }

    public async IAsyncEnumerable<KeyValuePair<string, byte[]>> DumpAsync(string account, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        Tenant? tenant;
        lock (_lock) _tenants.TryGetValue(account, out tenant);
        if (tenant is null) yield break;
        // ConcurrentDictionary's enumerator takes no snapshot and no lock: O(1) memory however
        // large the account, safe against the changes other calls make meanwhile.
        foreach (var (key, entry) in tenant.Entries)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (entry.ExpiresAt > _time.GetTimestamp()) yield return new KeyValuePair<string, byte[]>(key, entry.Value);
        }
        await Task.CompletedTask.ConfigureAwait(false);
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private void PurgeExpired(Tenant tenant, long now)
    {
        foreach (var (_, entry) in tenant.Entries)
        {
            if (entry.ExpiresAt <= now) Remove(tenant, entry);
        }
    }

    private void Remove(Tenant tenant, Entry entry)
    {
        if (!tenant.Entries.TryRemove(new KeyValuePair<string, Entry>(entry.Key, entry))) return;
        _lru.Remove(entry.Node!);
        _bytes -= entry.Size;
        if (entry.ExpiresAt != long.MaxValue) tenant.WithTtl--;
    }

    private sealed class Tenant
    {
        public ConcurrentDictionary<string, Entry> Entries { get; } = new(StringComparer.Ordinal);

        /// <summary>How many entries have a TTL: purging expired entries is pointless when none do.</summary>
        public int WithTtl { get; set; }
    }

    private sealed class Entry(string account, string key, byte[] value, long expiresAt, long size)
    {
        public string Account { get; } = account;
        public string Key { get; } = key;
        public byte[] Value { get; } = value;
        public long ExpiresAt { get; } = expiresAt;
        public long Size { get; } = size;
        public LinkedListNode<Entry>? Node { get; set; }
    }
}
