using System.Collections.Concurrent;
using Conduit.Grpc;
using Conduit.Protos.Accounts.V1;
using Grpc.Core;

namespace Conduit.Services.Cache;

/// <summary>What the cache needs to know about the caller's account.</summary>
public sealed record CacheAccount(string Id, long MaxCacheKeys, long MaxValueBytes);

/// <summary>Finds the account of a token, or throws the RpcException the caller should get.</summary>
public interface IAccountDirectory
{
    /// <param name="deadline">The caller's deadline (DateTime.MaxValue: none); the lookup never outlives it.</param>
    Task<CacheAccount> ResolveAsync(string token, DateTime deadline, CancellationToken cancellationToken);
}

/// <summary>
/// Resolves tokens by calling accounts.v1.Accounts/GetByToken through the generated client, and
/// remembers answers (known and unknown tokens) for <see cref="CacheOptions.AccountsCacheTime"/>
/// so a hot path is not an RPC per call. Each lookup has its own deadline
/// (<see cref="CacheOptions.AccountsTimeout"/>); made inside a handler it also inherits the
/// caller's remaining deadline and cancellation, so it never outlives the call that needs it.
/// When Accounts cannot answer the caller gets UNAVAILABLE with RetryInfo, never a guess.
/// </summary>
public sealed class AccountsLookup : IAccountDirectory, IDisposable
{
    private const int MaxRemembered = 100_000;
    private static readonly TimeSpan RetryDelay = TimeSpan.FromSeconds(1);

    private readonly Func<ChannelBase> _channelFactory;
    private readonly object _channelLock = new();
    private ChannelBase? _channel;
    private Protos.Accounts.V1.Accounts.AccountsClient? _client;
    private readonly CacheOptions _options;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, Remembered> _remembered = new(StringComparer.Ordinal);

    /// <param name="channelFactory">Makes the channel to Accounts on first use (when the server's own address is known).</param>
    public AccountsLookup(Func<ChannelBase> channelFactory, CacheOptions options, TimeProvider? time = null)
    {
        _channelFactory = channelFactory;
        _options = options;
        _time = time ?? TimeProvider.System;
    }

    /// <summary>Lookups answered by Accounts (not from memory) since start.</summary>
    public long RemoteLookups => Interlocked.Read(ref _remoteLookups);

    private long _remoteLookups;

    public async Task<CacheAccount> ResolveAsync(string token, DateTime deadline, CancellationToken cancellationToken)
    {
        var now = _time.GetTimestamp();
        if (_remembered.TryGetValue(token, out var known) && known.Until > now)
        {
            return known.Account ?? throw Unknown();
        }

        CacheAccount? account;
        // A span of its own when tracing is on (null, and free, when nobody listens): the Accounts
        // call's client span and, through traceparent, the Accounts server span are its children.
        using var activity = CacheMetrics.Source.StartActivity("cache.accounts_lookup");
        try
        {
            Interlocked.Increment(ref _remoteLookups);
            CacheMetrics.AccountsCalls.Add(1);
            var own = _time.GetUtcNow().UtcDateTime + _options.AccountsTimeout;
            var options = new CallOptions(deadline: deadline < own ? deadline : own, cancellationToken: cancellationToken);
            using var call = Client().GetByTokenAsync(new GetByTokenReq { Token = token }, options);
            var reply = await call.ResponseAsync.ConfigureAwait(false);
            account = new CacheAccount(reply.Account.Id, reply.Account.MaxCacheKeys, reply.Account.MaxValueBytes);
        }
        catch (RpcException ex) when (ex.StatusCode is StatusCode.NotFound or StatusCode.InvalidArgument)
        {
            account = null;
        }
        catch (InvalidOperationException ex)
        {
            // No address to call yet (the server is not listening).
            throw RpcException.WithDetails(StatusCode.Unavailable, $"The Accounts service cannot be called: {ex.Message}", Details.RetryInfo(RetryDelay));
        }
        catch (RpcException ex)
        {
            activity?.SetStatus(System.Diagnostics.ActivityStatusCode.Error, ex.StatusCode.ToString());
            if (cancellationToken.IsCancellationRequested || (ex.StatusCode == StatusCode.DeadlineExceeded && DateTime.UtcNow >= deadline))
            {
                // The caller's own deadline (or cancellation) cut the lookup short.
                throw new RpcException(new Status(DateTime.UtcNow >= deadline ? StatusCode.DeadlineExceeded : StatusCode.Cancelled,
                    "The call ended while its account was being looked up."));
            }
            throw RpcException.WithDetails(StatusCode.Unavailable, $"The Accounts service cannot check the token now ({ex.StatusCode}: {ex.Status.Detail}).",
                Details.RetryInfo(RetryDelay), Details.ErrorInfo("ACCOUNTS_UNAVAILABLE", CacheService.Domain));
        }

        if (_remembered.Count >= MaxRemembered) _remembered.Clear();
        _remembered[token] = new Remembered(account, now + (long)(_options.AccountsCacheTime.TotalSeconds * _time.TimestampFrequency));
        return account ?? throw Unknown();
    }

    /// <summary>The channel the lookups use (made on first use), for a health probe of Accounts.</summary>
    public ChannelBase Channel()
    {
        Client();
        lock (_channelLock) return _channel!;
    }

    /// <summary>Forgets every remembered token (tests; an operator after revoking a token).</summary>
    public void Forget() => _remembered.Clear();

    public void Dispose()
    {
        lock (_channelLock) (_channel as IDisposable)?.Dispose();
    }

    /// <summary>The client, made on first use; a factory that fails is tried again on the next call.</summary>
    private Protos.Accounts.V1.Accounts.AccountsClient Client()
    {
        if (Volatile.Read(ref _client) is { } client) return client;
        lock (_channelLock)
        {
            if (_client is null)
            {
                _channel = _channelFactory();
                Volatile.Write(ref _client, new Protos.Accounts.V1.Accounts.AccountsClient(_channel));
            }
            return _client;
        }
    }

    private static RpcException Unknown() =>
        RpcException.WithDetails(StatusCode.Unauthenticated, "The token belongs to no enabled account.", Details.ErrorInfo("TOKEN_UNKNOWN", CacheService.Domain));

    private sealed record Remembered(CacheAccount? Account, long Until);
}
