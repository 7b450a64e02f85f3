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
                ttl = duration.ToTimeSpan();
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
            throw new RpcException(new Status(StatusCode.NotFound, $"No key '{request.Key}' (or it expired)."));
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
        return deleted ? new DeleteResp() : throw new RpcException(new Status(StatusCode.NotFound, $"No key '{request.Key}' (or it expired)."));
    }

    public override async Task Dump(DumpReq request, IServerStreamWriter<DumpItem> responseStream, ServerCallContext context)
    {
        // Rejected before anything else (the talk's "InTap"): no token lookup, no backend work.
        using var slot = dumps.TryEnter() ?? throw DumpsExhausted();
        var account = await AuthenticateAsync(context, null).ConfigureAwait(false);
        var token = context.CancellationToken;
        // One entry at a time: each write waits for HTTP/2 flow control before the next entry
        // is read from the backend, so a slow reader holds the dump back instead of memory.
        await foreach (var (key, value) in backend.DumpAsync(account.Id, token).ConfigureAwait(false))
        {
            await responseStream.WriteAsync(new DumpItem { Key = key, Val = UnsafeByteOperations.UnsafeWrap(value) }, token).ConfigureAwait(false);
        }
    }

    private RpcException DumpsExhausted()
    {
        CacheMetrics.Rejected("max_concurrent_dumps");
        return RpcException.WithDetails(StatusCode.ResourceExhausted, $"{dumps.Limit} dumps are already running; try again later.",
            Details.RetryInfo(RetryDelay), Details.QuotaFailure(("cache", $"max_concurrent_dumps {dumps.Limit}")));
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

/// <summary>How many dumps may run at once: <see cref="TryEnter"/> takes a slot or answers null at once.</summary>
public sealed class DumpLimiter(int limit)
{
    private int _running;

    public int Limit { get; } = limit > 0 ? limit : throw new ArgumentOutOfRangeException(nameof(limit));

    public int Running => Volatile.Read(ref _running);

    public IDisposable? TryEnter()
    {
        while (true)
        {
            var running = Volatile.Read(ref _running);
            if (running >= Limit) return null;
            if (Interlocked.CompareExchange(ref _running, running + 1, running) == running) return new Slot(this);
        }
    }

    private sealed class Slot(DumpLimiter owner) : IDisposable
    {
        private int _released;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0) Interlocked.Decrement(ref owner._running);
        }
    }
}
