using Conduit.Grpc;
using Conduit.Hosting;
using Conduit.Protos.Accounts.V1;
using Conduit.Protos.Cache.V1;
using Conduit.Services.Cache;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using static Conduit.Cache.Tests.CacheHost;
using Status = Grpc.Core.Status;

namespace Conduit.Cache.Tests;

/// <summary>The cache's calls to Accounts: where they go, their deadlines, the lookup cache, failures.</summary>
public class LookupTests
{
    /// <summary>An Accounts service that knows one token, answers after <see cref="Delay"/> and records what each call looked like.</summary>
    public sealed class FakeAccounts : Protos.Accounts.V1.Accounts.AccountsBase
    {
        public const string Token = "cdt_fake";

        public TimeSpan Delay { get; set; }

        public int Calls => Volatile.Read(ref _calls);

        private int _calls;

        /// <summary>Set when a lookup of <see cref="Token"/> has arrived (and is waiting out <see cref="Delay"/>), with the deadline it carried.</summary>
        public TaskCompletionSource<DateTime> Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Set when this server saw a lookup cancelled: the deadline it carried and when it was cancelled.</summary>
        public TaskCompletionSource<(DateTime Deadline, DateTime Cancelled)> Cut { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override async Task<GetByTokenResp> GetByToken(GetByTokenReq request, ServerCallContext context)
        {
            Interlocked.Increment(ref _calls);
            if (request.Token != Token) throw new RpcException(new Status(StatusCode.NotFound, "unknown"));
            Started.TrySetResult(context.Deadline);
            try
            {
                await Task.Delay(Delay, context.CancellationToken);
            }
            catch (OperationCanceledException)
            {
                Cut.TrySetResult((context.Deadline, DateTime.UtcNow));
                throw;
            }
            return new GetByTokenResp { Account = new Account { Id = "acc_fake", MaxCacheKeys = 100, MaxValueBytes = 1000 } };
        }
    }

    private sealed class Remote(InProcessServer server, FakeAccounts accounts) : InProcessServer(server)
    {
        public FakeAccounts Accounts => accounts;

        public string Url => Address;

        public static async Task<Remote> StartAsync(TimeSpan delay)
        {
            var accounts = new FakeAccounts { Delay = delay };
            var server = await InProcessServer.StartAsync(s => s.AddSingleton(accounts), a => a.MapGrpcService<FakeAccounts>());
            return new Remote(server, accounts);
        }
    }

    /// <summary>
    /// One lookup of an unknown token (answered at once) so that JIT and the connection to
    /// Accounts do not eat the short deadlines the tests then use.
    /// </summary>
    private static async Task WarmUp(CacheHost host, FakeAccounts accounts)
    {
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Cache.GetAsync(new GetReq { Key = "k" }, As("cdt_warm-up")));
        Assert.Equal(StatusCode.Unauthenticated, ex.StatusCode);
        Assert.Equal(1, accounts.Calls);
    }

    [Fact]
    public async Task The_accounts_lookup_is_cut_short_by_the_callers_deadline()
    {
        await using var remote = await Remote.StartAsync(Timeout.InfiniteTimeSpan);
        // The cache's own deadline for lookups is long; the caller's is short and must win.
        await using var host = await StartAsync(new CacheOptions { AccountsUrl = remote.Url, AccountsTimeout = TimeSpan.FromSeconds(60) });
        await WarmUp(host, remote.Accounts);
        var callerDeadline = DateTime.UtcNow + TimeSpan.FromMilliseconds(500);
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Cache.GetAsync(new GetReq { Key = "k" },
            As(FakeAccounts.Token).WithDeadline(callerDeadline)));
        Assert.Equal(StatusCode.DeadlineExceeded, ex.StatusCode);

        var (seenDeadline, cancelledAt) = await remote.Accounts.Cut.Task.WaitAsync(TimeSpan.FromSeconds(20));
        // Accounts saw (via grpc-timeout) a deadline no later than the caller's, not the cache's 60 s
        // (grpc-timeout is a duration: Accounts adds it to the moment it reads it, so the time the
        // request spent on its way, under a loaded CI run up to ~100 ms, comes on top)...
        Assert.True(seenDeadline <= callerDeadline + TimeSpan.FromMilliseconds(250), $"Accounts deadline {seenDeadline:O} is after the caller's {callerDeadline:O}");
        // ...and its call was ended around then, not a minute later.
        Assert.True(cancelledAt < callerDeadline + TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task A_cancelled_cache_call_cancels_the_accounts_lookup()
    {
        await using var remote = await Remote.StartAsync(Timeout.InfiniteTimeSpan);
        await using var host = await StartAsync(new CacheOptions { AccountsUrl = remote.Url, AccountsTimeout = TimeSpan.FromSeconds(60) });
        await WarmUp(host, remote.Accounts);
        using var cancel = new CancellationTokenSource();
        var call = host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("v") },
            As(FakeAccounts.Token, timeout: TimeSpan.FromSeconds(60)).WithCancellationToken(cancel.Token));

        // The lookup is waiting in Accounts; now the client gives up on the cache call.
        var lookupDeadline = await remote.Accounts.Started.Task.WaitAsync(TimeSpan.FromSeconds(20));
        var cancelledAt = DateTime.UtcNow;
        cancel.Cancel();
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await call);
        Assert.Equal(StatusCode.Cancelled, ex.StatusCode);

        // The cache server saw the reset, cancelled its lookup, and Accounts saw that: long
        // before either deadline (both about a minute away), so it was the cancellation.
        var (_, cut) = await remote.Accounts.Cut.Task.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.True(lookupDeadline > cancelledAt + TimeSpan.FromSeconds(30), $"the lookup's deadline {lookupDeadline:O} was already short");
        Assert.True(cut < lookupDeadline - TimeSpan.FromSeconds(30), $"Accounts saw the lookup end at {cut:O}, its deadline being {lookupDeadline:O}");
    }

    [Fact]
    public async Task A_lookup_that_outlives_its_own_deadline_is_unavailable_with_retry_info()
    {
        await using var remote = await Remote.StartAsync(Timeout.InfiniteTimeSpan);
        await using var host = await StartAsync(new CacheOptions { AccountsUrl = remote.Url, AccountsTimeout = TimeSpan.FromMilliseconds(300) });
        await WarmUp(host, remote.Accounts);
        var started = DateTime.UtcNow;
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("v") },
            As(FakeAccounts.Token, timeout: TimeSpan.FromSeconds(30))));
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
        Assert.NotNull(ex.GetDetail<RetryInfo>());
        var (seenDeadline, _) = await remote.Accounts.Cut.Task.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.True(seenDeadline <= started + TimeSpan.FromSeconds(2), "the lookup carried the cache's own short deadline");
    }

    [Fact]
    public async Task Accounts_down_is_unavailable_with_retry_info_and_never_a_wrong_answer()
    {
        var closedPort = Ports.Free();
        await using var host = await StartAsync(new CacheOptions { AccountsUrl = $"http://127.0.0.1:{closedPort}" });
        foreach (var call in new Func<Task>[]
        {
            async () => await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("v") }, As("cdt_any")),
            async () => await host.Cache.GetAsync(new GetReq { Key = "k" }, As("cdt_any")),
            async () => await host.Cache.DeleteAsync(new DeleteReq { Key = "k" }, As("cdt_any")),
        })
        {
            var ex = await Assert.ThrowsAsync<RpcException>(call);
            Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
            Assert.NotNull(ex.GetDetail<RetryInfo>());
        }
        // Answers about unreachable Accounts are not remembered: nothing was cached as "unknown",
        // every attempt looked again. Store and Delete are one attempt each; Get, a read, is retried
        // on UNAVAILABLE by the client's default service config (3 attempts, docs/client.md).
        Assert.Equal(1 + 3 + 1, host.Services.GetRequiredService<AccountsLookup>().RemoteLookups);
    }

    [Fact]
    public async Task A_hot_token_is_looked_up_once_within_the_cache_time_and_the_services_can_run_apart()
    {
        await using var remote = await Remote.StartAsync(TimeSpan.Zero);
        await using var host = await StartAsync(new CacheOptions { AccountsUrl = remote.Url, AccountsCacheTime = TimeSpan.FromMinutes(5) });
        await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("v") }, As(FakeAccounts.Token));
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal("v", (await host.Cache.GetAsync(new GetReq { Key = "k" }, As(FakeAccounts.Token))).Val.ToStringUtf8());
        }
        Assert.Equal(1, remote.Accounts.Calls);
        // Unknown tokens are remembered too.
        for (var i = 0; i < 3; i++)
        {
            var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Cache.GetAsync(new GetReq { Key = "k" }, As("cdt_other")));
            Assert.Equal(StatusCode.Unauthenticated, ex.StatusCode);
        }
        Assert.Equal(2, remote.Accounts.Calls);
        // With --accounts-url, this server does not serve Accounts itself.
        var unimplemented = await Assert.ThrowsAsync<RpcException>(async () => await host.Accounts.ListAccountsAsync(new ListAccountsReq()));
        Assert.Equal(StatusCode.Unimplemented, unimplemented.StatusCode);
    }

    [Fact]
    public async Task Over_tls_only_the_cache_calls_its_own_server_trusting_its_certificate()
    {
        var certDir = Directory.CreateTempSubdirectory("conduit-cache-tls-").FullName;
        try
        {
            var (cert, key) = Commands.SelfSigned.WritePem(certDir);
            var handler = new SocketsHttpHandler { SslOptions = { RemoteCertificateValidationCallback = (_, _, _, _) => true } };
            await using var host = await StartAsync(configureServe: s => { s.Urls = ["https://127.0.0.1:0"]; s.TlsCert = cert; s.TlsKey = key; },
                channelOptions: o => o.HttpHandler = handler);
            Assert.StartsWith("https://", host.Address);
            var (_, token) = await host.CreateAccountAsync();
            await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("v") }, As(token));
            Assert.Equal("v", (await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token))).Val.ToStringUtf8());
        }
        finally
        {
            Directory.Delete(certDir, true);
        }
    }

    [Fact]
    public async Task Two_servers_apart_one_cache_uses_the_other_servers_accounts()
    {
        await using var accounts = await StartAsync();
        await using var cache = await StartAsync(new CacheOptions { AccountsUrl = accounts.Address });
        var (_, token) = await accounts.CreateAccountAsync("apart", maxKeys: 1);
        await cache.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("v") }, As(token));
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await cache.Cache.StoreAsync(new StoreReq { Key = "k2", Val = ByteString.CopyFromUtf8("v") }, As(token)));
        Assert.Equal(StatusCode.FailedPrecondition, ex.StatusCode);
        // The entries live in the cache server, not in the accounts server's own cache.
        ex = await Assert.ThrowsAsync<RpcException>(async () => await accounts.Cache.GetAsync(new GetReq { Key = "k" }, As(token)));
        Assert.Equal(StatusCode.NotFound, ex.StatusCode);
    }

    [Fact]
    public async Task By_default_the_cache_calls_the_accounts_service_of_its_own_server()
    {
        await using var host = await StartAsync();
        var (_, token) = await host.CreateAccountAsync();
        await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("v") }, As(token));
        Assert.Equal(1, host.Services.GetRequiredService<AccountsLookup>().RemoteLookups);
    }
}
