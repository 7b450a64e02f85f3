using System.Collections.Concurrent;
using System.Runtime.CompilerServices;

namespace Conduit.Services.Cache;

/// <summary>
/// The embedded cache: entries in process memory, bounded by <see cref="MaxBytes"/> for all
/// accounts together. Each entry is charged <see cref="EntryOverhead"/> bytes plus its key (UTF-16)
/// and value. Every account holding entries has a fair share of the bound (<see cref="MaxBytes"/>
/// divided by the number of such accounts); when a store would go over the bound, entries are
/// evicted only from accounts above their share (the storing one included): the least recently
/// used entry of the account furthest above its share first. So one account's writes never evict
/// another account below its share; a store that could only fit that way is refused
/// (<see cref="StoreOutcome.OverShare"/>). Expired entries are dropped when touched, when their
/// account hits its key quota, or when eviction reaches them. Every change happens under one lock,
/// which makes the key quota exact; reads of a dump walk a concurrent dictionary without it.
/// </summary>
public sealed class MemoryCacheBackend(long maxBytes, TimeProvider? time = null) : ICacheBackend
{
    /// <summary>Bytes charged per entry on top of key and value: object headers, links, dictionary slot.</summary>
    public const int EntryOverhead = 128;

    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly object _lock = new();
    private readonly Dictionary<string, Tenant> _tenants = new(StringComparer.Ordinal);
    private long _bytes;

    public long MaxBytes { get; } = maxBytes > 0 ? maxBytes : throw new ArgumentOutOfRangeException(nameof(maxBytes));

    /// <summary>Bytes charged for the entries held now.</summary>
    public long UsedBytes { get { lock (_lock) return _bytes; } }

    /// <summary>Bytes charged for the entries <paramref name="account"/> holds now.</summary>
    public long UsedBytesOf(string account)
    {
        lock (_lock) return _tenants.TryGetValue(account, out var tenant) ? tenant.Bytes : 0;
    }

    /// <summary>Entries evicted to stay under <see cref="MaxBytes"/> since start.</summary>
    public long Evictions { get { lock (_lock) return _evictions; } }

    private long _evictions;

    public static long SizeOf(string key, byte[] value) => EntryOverhead + (2L * key.Length) + value.Length;

    public Task<StoreOutcome> StoreAsync(string account, string key, byte[] value, TimeSpan? ttl, long maxKeys, bool dryRun, CancellationToken cancellationToken)
    {
        var size = SizeOf(key, value);
        var now = _time.GetTimestamp();
        var expires = ttl is { } t && t > TimeSpan.Zero ? now + ToTimestamp(t) : long.MaxValue;
        lock (_lock)
        {
            if (!_tenants.TryGetValue(account, out var tenant)) tenant = new Tenant(account);
            var exists = tenant.Entries.TryGetValue(key, out var existing) && existing.ExpiresAt > now;
            if (!exists && tenant.Entries.Count - (existing is null ? 0 : 1) >= maxKeys)
            {
                if (tenant.WithTtl > 0) PurgeExpired(tenant, now);
                if (tenant.Entries.Count - (tenant.Entries.ContainsKey(key) ? 1 : 0) >= maxKeys) return Task.FromResult(StoreOutcome.KeyQuotaExceeded);
            }
            if (size > MaxBytes) return Task.FromResult(StoreOutcome.LargerThanCache);
            tenant.Entries.TryGetValue(key, out existing);
            var victims = PlanEviction(tenant, existing, size);
            if (victims is null) return Task.FromResult(StoreOutcome.OverShare);
            if (dryRun) return Task.FromResult(StoreOutcome.Stored);

            foreach (var victim in victims)
            {
                Remove(victim.Tenant, victim);
                _evictions++;
                CacheMetrics.Evictions.Add(1);
            }
            if (existing is not null) Remove(tenant, existing);
            var entry = new Entry(tenant, key, value, expires, size);
            entry.Node = tenant.Lru.AddFirst(entry);
            tenant.Entries[key] = entry;
            tenant.Bytes += size;
            if (expires != long.MaxValue) tenant.WithTtl++;
            _bytes += size;
            _tenants[account] = tenant;
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
            tenant.Lru.Remove(entry.Node!);
            tenant.Lru.AddFirst(entry.Node!);
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

    /// <summary>A TTL in timestamp units, rounded up: a positive TTL is never 0 units (which would mean "never expires" nowhere, but "now").</summary>
    private long ToTimestamp(TimeSpan ttl) => _time.TimestampFrequency == TimeSpan.TicksPerSecond
        ? ttl.Ticks
        : (long)Math.Ceiling(ttl.Ticks * (double)_time.TimestampFrequency / TimeSpan.TicksPerSecond);

    /// <summary>
    /// The entries to evict so that <paramref name="self"/> can hold a new entry of
    /// <paramref name="size"/> bytes (replacing <paramref name="existing"/>), changing nothing; null
    /// when it cannot fit without taking another account below its share. Each step evicts the
    /// least recently used entry of the account furthest above its share, counting
    /// <paramref name="self"/> with its new entry.
    /// </summary>
    private List<Entry>? PlanEviction(Tenant self, Entry? existing, long size)
    {
        var need = _bytes - (existing?.Size ?? 0) + size - MaxBytes;
        if (need <= 0) return [];
        var active = 1;
        foreach (var tenant in _tenants.Values)
        {
            if (tenant != self && tenant.Bytes > 0) active++;
        }
        var share = MaxBytes / active;
        // What each account would hold, and its next eviction candidate, as the plan goes on.
        var planned = new Dictionary<Tenant, (long Bytes, LinkedListNode<Entry>? Next)>();
        (long Bytes, LinkedListNode<Entry>? Next) State(Tenant t) => planned.TryGetValue(t, out var s) ? s
            : t == self ? (t.Bytes - (existing?.Size ?? 0) + size, Skip(t.Lru.Last, existing)) : (t.Bytes, t.Lru.Last);
        var victims = new List<Entry>();
        while (need > 0)
        {
            Tenant? victim = null;
            var over = 0L;
            foreach (var tenant in _tenants.ContainsKey(self.Account) ? _tenants.Values : _tenants.Values.Append(self))
            {
                var state = State(tenant);
                if (state.Next is not null && state.Bytes - share > over)
                {
                    victim = tenant;
                    over = state.Bytes - share;
                }
            }
            if (victim is null) return null;
            var (bytes, next) = State(victim);
            victims.Add(next!.Value);
            need -= next.Value.Size;
            planned[victim] = (bytes - next.Value.Size, Skip(next.Previous, existing));
        }
        return victims;
    }

    private static LinkedListNode<Entry>? Skip(LinkedListNode<Entry>? node, Entry? existing) =>
        node is not null && existing is not null && ReferenceEquals(node.Value, existing) ? node.Previous : node;

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
        tenant.Lru.Remove(entry.Node!);
        tenant.Bytes -= entry.Size;
        _bytes -= entry.Size;
        if (entry.ExpiresAt != long.MaxValue) tenant.WithTtl--;
        // An account without entries takes no memory here (a store adds it again).
        if (tenant.Entries.IsEmpty) _tenants.Remove(tenant.Account);
    }

    private sealed class Tenant(string account)
    {
        public string Account { get; } = account;

        public ConcurrentDictionary<string, Entry> Entries { get; } = new(StringComparer.Ordinal);

        /// <summary>This account's entries, most recently used first.</summary>
        public LinkedList<Entry> Lru { get; } = new();

        /// <summary>Bytes charged for this account's entries.</summary>
        public long Bytes { get; set; }

        /// <summary>How many entries have a TTL: purging expired entries is pointless when none do.</summary>
        public int WithTtl { get; set; }
    }

    private sealed class Entry(Tenant tenant, string key, byte[] value, long expiresAt, long size)
    {
        public Tenant Tenant { get; } = tenant;
        public string Key { get; } = key;
        public byte[] Value { get; } = value;
        public long ExpiresAt { get; } = expiresAt;
        public long Size { get; } = size;
        public LinkedListNode<Entry>? Node { get; set; }
    }
}
