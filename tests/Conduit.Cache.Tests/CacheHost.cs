using Conduit.Grpc;
using Conduit.Hosting;
using Conduit.Protos.Accounts.V1;
using Conduit.Protos.Cache.V1;
using Conduit.Services.Accounts;
using Conduit.Services.Cache;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Cache.Tests;

/// <summary>
/// An in-process `conduit serve` with Accounts and Cache wired the way the executable wires them
/// (CacheHosting), on 127.0.0.1 with a free port and a temporary data folder.
/// </summary>
public sealed class CacheHost : InProcessServer
{
    private CacheHost(InProcessServer server) : base(server)
    {
        Cache = new Protos.Cache.V1.Cache.CacheClient(Channel);
        Accounts = new Protos.Accounts.V1.Accounts.AccountsClient(Channel);
    }

    public Protos.Cache.V1.Cache.CacheClient Cache { get; }

    public Protos.Accounts.V1.Accounts.AccountsClient Accounts { get; }

    public static async Task<CacheHost> StartAsync(CacheOptions? cache = null, AccountsOptions? accounts = null,
        Action<IServiceCollection>? services = null, Action<WebApplication>? map = null,
        Action<ServeOptions>? configureServe = null, Action<global::Grpc.Net.Client.GrpcChannelOptions>? channelOptions = null)
    {
        var data = new TempDir("conduit-cache-tests-");
        var serve = new ServeOptions { Urls = ["http://127.0.0.1:0"], DataDir = data.Path };
        configureServe?.Invoke(serve);
        var server = await InProcessServer.StartAsync(
            s =>
            {
                CacheHosting.AddAccounts(s, accounts ?? new AccountsOptions(), serve);
                CacheHosting.AddCache(s, cache ?? new CacheOptions(), serve);
                services?.Invoke(s);
            },
            a =>
            {
                CacheHosting.Map(a);
                map?.Invoke(a);
            },
            serve, channelOptions: channelOptions, data: data);
        return new CacheHost(server);
    }

    /// <summary>Creates an account through Accounts/CreateAccount; answers its id and token.</summary>
    public async Task<(string Id, string Token)> CreateAccountAsync(string name = "tenant", long maxKeys = 1000, long maxValueBytes = 64 * 1024)
    {
        var created = await Accounts.CreateAccountAsync(new CreateAccountReq { Name = name, MaxCacheKeys = maxKeys, MaxValueBytes = maxValueBytes },
            new CallOptions().WithTimeout(TimeSpan.FromSeconds(10)));
        return (created.Account.Id, created.Token);
    }

    /// <summary>
    /// A dump asked again while the account's slots are taken: the server's end of a call the
    /// client reset (or that timed out idle) is not observable from the client, so this asks
    /// again, bounded above, until the server has released a slot; <paramref name="meanwhile"/>
    /// runs between attempts.
    /// </summary>
    public static async Task<T> UntilAdmitted<T>(Func<Task<T>> dump, Action? meanwhile = null)
    {
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (true)
        {
            try
            {
                return await dump();
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.ResourceExhausted && DateTime.UtcNow < until)
            {
                meanwhile?.Invoke();
                await Task.Delay(20);
            }
        }
    }

    /// <summary>Call options carrying the token (and dry-run when asked), with a 30 s deadline.</summary>
    public static CallOptions As(string? token, bool dryRun = false, TimeSpan? timeout = null)
    {
        var headers = new Metadata();
        if (token is not null) headers.Add(BearerToken.Entry(token));
        if (dryRun) headers.Add(DryRun.Header);
        return new CallOptions(headers).WithTimeout(timeout ?? TimeSpan.FromSeconds(30));
    }
}

/// <summary>A clock the test moves by hand.</summary>
public sealed class ManualTime : TimeProvider
{
    private long _ticks = DateTimeOffset.UtcNow.UtcTicks;

    public override DateTimeOffset GetUtcNow() => new(Interlocked.Read(ref _ticks), TimeSpan.Zero);

    public override long GetTimestamp() => Interlocked.Read(ref _ticks);

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public void Advance(TimeSpan by) => Interlocked.Add(ref _ticks, by.Ticks);
}

/// <summary>Counts the entries the service pulls out of the backend during dumps.</summary>
public sealed class CountingBackend(ICacheBackend inner) : ICacheBackend
{
    private long _dumped;

    public ICacheBackend Inner => inner;

    public long Dumped => Interlocked.Read(ref _dumped);

    /// <summary>Dumps started on the backend.</summary>
    public int DumpCalls => Volatile.Read(ref _dumpCalls);

    private int _dumpCalls;

    public Task<StoreOutcome> StoreAsync(string account, string key, byte[] value, TimeSpan? ttl, long maxKeys, bool dryRun, CancellationToken cancellationToken) =>
        inner.StoreAsync(account, key, value, ttl, maxKeys, dryRun, cancellationToken);

    public Task<byte[]?> GetAsync(string account, string key, CancellationToken cancellationToken) => inner.GetAsync(account, key, cancellationToken);

    public Task<bool> DeleteAsync(string account, string key, bool dryRun, CancellationToken cancellationToken) => inner.DeleteAsync(account, key, dryRun, cancellationToken);

    public async IAsyncEnumerable<KeyValuePair<string, byte[]>> DumpAsync(string account, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _dumpCalls);
        await foreach (var item in inner.DumpAsync(account, cancellationToken))
        {
            Interlocked.Increment(ref _dumped);
            yield return item;
        }
    }

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}
