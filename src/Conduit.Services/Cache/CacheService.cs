using System.Text;
using Conduit.Grpc;
using Conduit.Protos.Cache.V1;
using Conduit.Services.Accounts;
using Google.Protobuf;
using Grpc.Core;

namespace Conduit.Services.Cache;

/// <summary>
/// cache.v1.Cache: Store, Get, Delete and Dump in the caller's own namespace. The caller is the
/// account of the `authorization: Bearer` token (or StoreReq.account_token), resolved through
/// <see cref="IAccountDirectory"/>; quotas are that account's. Store and Delete honour dry run.
/// </summary>
public sealed class CacheService(ICacheBackend backend, IAccountDirectory accounts, CacheOptions options, DumpLimiter dumps) : Protos.Cache.V1.Cache.CacheBase
{
    /// <summary>The ErrorInfo domain of the cache's errors.</summary>
    public const string Domain = "cache.conduit";
    private static readonly TimeSpan RetryDelay = TimeSpan.FromSeconds(1);

    [DryRunSupported]
    public override async Task<StoreResp> Store(StoreReq request, ServerCallContext context)
    {
        var account = await AuthenticateAsync(context, request.AccountToken).ConfigureAwait(false);
        var violations = new List<(string, string)>();
        ValidateKey(request.Key, violations);
        TimeSpan? ttl = null;
        if (request.Ttl is { } duration)
        {
            if (duration.Seconds < 0 || duration.Nanos < 0 || duration.Nanos >= 1_000_000_000 || duration.Seconds > 10L * 365 * 24 * 3600)
            {
                violations.Add(("ttl", "must be zero (no expiry) or a positive duration of at most 10 years"));
            }
            else
            {
                // Rounded up to whole ticks: Duration.ToTimeSpan truncates, so 1 to 99 ns would be
                // 0 ticks, which means "no expiry".
                ttl = TimeSpan.FromTicks((duration.Seconds * TimeSpan.TicksPerSecond) + ((duration.Nanos + 99) / 100));
            }
        }
        ThrowIfInvalid(violations);
        if (request.Val.Length > account.MaxValueBytes)
        {
            CacheMetrics.Rejected("max_value_bytes");
            throw RpcException.WithDetails(StatusCode.FailedPrecondition,
                $"The value is {request.Val.Length} bytes; account {account.Id} may store values of at most {account.MaxValueBytes} bytes.",
                Details.QuotaFailure(($"account:{account.Id}", $"max_value_bytes {account.MaxValueBytes}")),
                Details.ErrorInfo("VALUE_TOO_LARGE", Domain));
        }

        var outcome = await backend.StoreAsync(account.Id, request.Key, request.Val.ToByteArray(), ttl, account.MaxCacheKeys,
            DryRun.IsRequested(context), context.CancellationToken).ConfigureAwait(false);
        if (outcome == StoreOutcome.KeyQuotaExceeded) CacheMetrics.Rejected("max_cache_keys");
        else if (outcome == StoreOutcome.LargerThanCache) CacheMetrics.Rejected("max_memory_bytes");
        return outcome switch
        {
            StoreOutcome.Stored => new StoreResp(),
            StoreOutcome.KeyQuotaExceeded => throw RpcException.WithDetails(StatusCode.FailedPrecondition,
                $"Account {account.Id} already holds its maximum of {account.MaxCacheKeys} keys.",
                Details.QuotaFailure(($"account:{account.Id}", $"max_cache_keys {account.MaxCacheKeys}")),
                Details.ErrorInfo("KEY_QUOTA_EXCEEDED", Domain)),
            StoreOutcome.OverShare => throw RpcException.WithDetails(StatusCode.ResourceExhausted,
                $"The cache is full and account {account.Id} holds its share of it: the entry would fit only by evicting other accounts' entries below their shares. Delete or expire some of this account's keys.",
                Details.QuotaFailure(($"account:{account.Id}", $"a fair share of max_memory_bytes {options.MaxMemoryBytes}")),
                Details.ErrorInfo("CACHE_SHARE_EXCEEDED", Domain)),
            _ => throw RpcException.WithDetails(StatusCode.ResourceExhausted,
                $"The entry is larger than the whole cache ({options.MaxMemoryBytes} bytes).",
                Details.QuotaFailure(("cache", $"max_memory_bytes {options.MaxMemoryBytes}"))),
        };
    }

    public override async Task<GetResp> Get(GetReq request, ServerCallContext context)
    {
        var account = await AuthenticateAsync(context, null).ConfigureAwait(false);
        var violations = new List<(string, string)>();
        ValidateKey(request.Key, violations);
        ThrowIfInvalid(violations);
        var value = await backend.GetAsync(account.Id, request.Key, context.CancellationToken).ConfigureAwait(false);
        if (value is null)
        {
            CacheMetrics.Misses.Add(1);
            throw new RpcException(new Status(StatusCode.NotFound, $"No key '{ClientInput.Shorten(request.Key)}' (or it expired)."));
        }
        CacheMetrics.Hits.Add(1);
        // Stored arrays are never modified, so the response can wrap them without a copy.
        return new GetResp { Val = UnsafeByteOperations.UnsafeWrap(value) };
    }

    [DryRunSupported]
    public override async Task<DeleteResp> Delete(DeleteReq request, ServerCallContext context)
    {
        var account = await AuthenticateAsync(context, null).ConfigureAwait(false);
        var violations = new List<(string, string)>();
        ValidateKey(request.Key, violations);
        ThrowIfInvalid(violations);
        var deleted = await backend.DeleteAsync(account.Id, request.Key, DryRun.IsRequested(context), context.CancellationToken).ConfigureAwait(false);
        return deleted ? new DeleteResp() : throw new RpcException(new Status(StatusCode.NotFound, $"No key '{ClientInput.Shorten(request.Key)}' (or it expired)."));
    }

    public override async Task Dump(DumpReq request, IServerStreamWriter<DumpItem> responseStream, ServerCallContext context)
    {
        // The slots are the account's own (the token lookup is remembered, so this costs no RPC
        // on a hot path); one more is rejected before any backend work (the talk's "InTap").
        var account = await AuthenticateAsync(context, null).ConfigureAwait(false);
        using var slot = dumps.TryEnter(account.Id) ?? throw DumpsExhausted(account.Id);
        var token = context.CancellationToken;
        // A client that stops reading holds its slot only until the idle timeout: each write
        // (held back by HTTP/2 flow control while the client does not read) must finish in time.
        using var idle = new CancellationTokenSource(Timeout.InfiniteTimeSpan, dumps.Time);
        using var writing = CancellationTokenSource.CreateLinkedTokenSource(token, idle.Token);
        try
        {
            // One entry at a time: each write waits for HTTP/2 flow control before the next entry
            // is read from the backend, so a slow reader holds the dump back instead of memory.
            await foreach (var (key, value) in backend.DumpAsync(account.Id, token).ConfigureAwait(false))
            {
                idle.CancelAfter(dumps.IdleTimeout);
                await responseStream.WriteAsync(new DumpItem { Key = key, Val = UnsafeByteOperations.UnsafeWrap(value) }, writing.Token).ConfigureAwait(false);
                idle.CancelAfter(Timeout.InfiniteTimeSpan);
            }
        }
        catch (OperationCanceledException) when (idle.IsCancellationRequested && !token.IsCancellationRequested)
        {
            throw RpcException.WithDetails(StatusCode.ResourceExhausted,
                $"The dump was ended: the client read nothing for {dumps.IdleTimeout.TotalSeconds:0.###} s, and its slot went back to the account.",
                Details.QuotaFailure(($"account:{account.Id}", $"dump_idle_timeout {dumps.IdleTimeout.TotalSeconds:0.###} s")));
        }
    }

    private RpcException DumpsExhausted(string accountId)
    {
        CacheMetrics.Rejected("max_concurrent_dumps");
        return RpcException.WithDetails(StatusCode.ResourceExhausted, $"Account {accountId} already runs {dumps.Limit} dumps; try again when one ends.",
            Details.RetryInfo(RetryDelay), Details.QuotaFailure(($"account:{accountId}", $"max_concurrent_dumps {dumps.Limit}")));
    }

    private async Task<CacheAccount> AuthenticateAsync(ServerCallContext context, string? fieldToken)
    {
        var token = BearerToken.From(context.RequestHeaders) ?? (string.IsNullOrEmpty(fieldToken) ? null : fieldToken);
        if (token is null)
        {
            throw RpcException.WithDetails(StatusCode.Unauthenticated, "No token: send 'authorization: Bearer <token>'.",
                Details.ErrorInfo("TOKEN_MISSING", Domain));
        }
        return await accounts.ResolveAsync(token, context.Deadline, context.CancellationToken).ConfigureAwait(false);
    }

    private void ValidateKey(string key, List<(string, string)> violations)
    {
        if (key.Length == 0) violations.Add(("key", "required"));
        else if (Encoding.UTF8.GetByteCount(key) > options.MaxKeyBytes) violations.Add(("key", $"at most {options.MaxKeyBytes} bytes of UTF-8"));
    }

    private static void ThrowIfInvalid(List<(string, string)> violations)
    {
        if (violations.Count > 0)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, "Invalid request: " + string.Join("; ", violations.Select(v => $"{v.Item1}: {v.Item2}")),
                Details.BadRequest([.. violations]));
        }
    }
}

/// <summary>
/// The cache's failures as statuses (registered in DI by the host, run by ExceptionInterceptor):
/// a backend that cannot be reached is UNAVAILABLE with RetryInfo, so the handlers carry no
/// catch blocks of their own.
/// </summary>
public sealed class CacheExceptionMapper : IExceptionMapper
{
    private static readonly TimeSpan RetryDelay = TimeSpan.FromSeconds(1);

    public RpcException? Map(Exception exception, ServerCallContext context) => exception switch
    {
        CacheBackendUnavailableException ex => RpcException.WithDetails(StatusCode.Unavailable, ex.Message,
            Details.RetryInfo(RetryDelay), Details.ErrorInfo("BACKEND_UNAVAILABLE", CacheService.Domain)),
        _ => null,
    };
}

/// <summary>
/// How many dumps each account may run at once (the slots are per account: one tenant holding
/// all of its own never blocks another's), and how long a dump may wait for a client that does
/// not read (<see cref="IdleTimeout"/>, measured on <see cref="Time"/>). <see cref="TryEnter"/>
/// takes a slot or answers null at once.
/// </summary>
public sealed class DumpLimiter(int limit, TimeSpan? idleTimeout = null, TimeProvider? time = null)
{
    private readonly object _lock = new();
    private readonly Dictionary<string, int> _running = new(StringComparer.Ordinal);

    /// <summary>Dumps one account may run at once.</summary>
    public int Limit { get; } = limit > 0 ? limit : throw new ArgumentOutOfRangeException(nameof(limit));

    /// <summary>How long one write of a dump may wait for the client to read.</summary>
    public TimeSpan IdleTimeout { get; } = idleTimeout is not { } t ? CacheOptions.DefaultDumpIdleTimeout
        : t > TimeSpan.Zero ? t : throw new ArgumentOutOfRangeException(nameof(idleTimeout));

    public TimeProvider Time { get; } = time ?? TimeProvider.System;

    /// <summary>The dumps <paramref name="account"/> runs now.</summary>
    public int Running(string account)
    {
        lock (_lock) return _running.GetValueOrDefault(account);
    }

    public IDisposable? TryEnter(string account)
    {
        lock (_lock)
        {
            var running = _running.GetValueOrDefault(account);
            if (running >= Limit) return null;
            _running[account] = running + 1;
        }
        return new Slot(this, account);
    }

    private void Release(string account)
    {
        lock (_lock)
        {
            if (_running[account] == 1) _running.Remove(account);
            else _running[account]--;
        }
    }

    private sealed class Slot(DumpLimiter owner, string account) : IDisposable
    {
        private int _released;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0) owner.Release(account);
        }
    }
}
