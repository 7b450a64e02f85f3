using Conduit.Grpc;
using Conduit.Protos.Cache.V1;
using Conduit.Services.Cache;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using static Conduit.Cache.Tests.CacheHost;

namespace Conduit.Cache.Tests;

/// <summary>
/// The cache's rules, black-box through the generated client. Run once per backend: the embedded
/// one (<see cref="EmbeddedCacheTests"/>) and a real redis-server (<see cref="RedisCacheTests"/>).
/// </summary>
public abstract class CacheSuite
{
    /// <summary>Options choosing the backend under test.</summary>
    protected abstract CacheOptions Options();

    /// <summary>Entries for the large-dump test (kept smaller where filling the backend is slow).</summary>
    protected abstract int LargeDumpEntries { get; }

    protected Task<CacheHost> Start(Action<CacheOptions>? configure = null, Action<IServiceCollection>? services = null)
    {
        var options = Options();
        configure?.Invoke(options);
        return CacheHost.StartAsync(options, services: services);
    }

    protected static ByteString Bytes(string s) => ByteString.CopyFromUtf8(s);

    protected static async Task<RpcException> Fails(StatusCode code, Func<Task> call)
    {
        var ex = await Assert.ThrowsAsync<RpcException>(call);
        Assert.Equal(code, ex.StatusCode);
        return ex;
    }

    protected static async Task<Dictionary<string, string>> DumpAll(CacheHost host, string token)
    {
        var result = new Dictionary<string, string>();
        using var call = host.Cache.Dump(new DumpReq(), As(token));
        await foreach (var item in call.ResponseStream.ReadAllAsync())
        {
            Assert.True(result.TryAdd(item.Key, item.Val.ToStringUtf8()), $"key {item.Key} dumped twice");
        }
        return result;
    }

    [Fact]
    public async Task Store_then_get_answers_the_value_and_a_missing_key_is_not_found()
    {
        await using var host = await Start();
        var (_, token) = await host.CreateAccountAsync();
        await host.Cache.StoreAsync(new StoreReq { Key = "greeting", Val = Bytes("hello") }, As(token));
        var got = await host.Cache.GetAsync(new GetReq { Key = "greeting" }, As(token));
        Assert.Equal("hello", got.Val.ToStringUtf8());
        await host.Cache.StoreAsync(new StoreReq { Key = "greeting", Val = Bytes("bye") }, As(token));
        Assert.Equal("bye", (await host.Cache.GetAsync(new GetReq { Key = "greeting" }, As(token))).Val.ToStringUtf8());
        await Fails(StatusCode.NotFound, async () => await host.Cache.GetAsync(new GetReq { Key = "nothing" }, As(token)));
        await host.Cache.DeleteAsync(new DeleteReq { Key = "greeting" }, As(token));
        await Fails(StatusCode.NotFound, async () => await host.Cache.GetAsync(new GetReq { Key = "greeting" }, As(token)));
        await Fails(StatusCode.NotFound, async () => await host.Cache.DeleteAsync(new DeleteReq { Key = "greeting" }, As(token)));
    }

    [Fact]
    public async Task No_token_or_an_unknown_one_is_unauthenticated_on_every_rpc()
    {
        await using var host = await Start();
        foreach (var token in new string?[] { null, "cdt_not-a-real-token" })
        {
            await Fails(StatusCode.Unauthenticated, async () => await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = Bytes("v") }, As(token)));
            await Fails(StatusCode.Unauthenticated, async () => await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token)));
            await Fails(StatusCode.Unauthenticated, async () => await host.Cache.DeleteAsync(new DeleteReq { Key = "k" }, As(token)));
            await Fails(StatusCode.Unauthenticated, async () => await DumpAll(host, token!));
        }
    }

    [Fact]
    public async Task The_talks_account_token_field_is_accepted_on_store()
    {
        await using var host = await Start();
        var (_, token) = await host.CreateAccountAsync();
        await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = Bytes("v"), AccountToken = token }, As(null));
        Assert.Equal("v", (await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token))).Val.ToStringUtf8());
    }

    [Fact]
    public async Task Two_tenants_with_the_same_key_names_never_see_each_others_entries()
    {
        await using var host = await Start();
        var (_, ann) = await host.CreateAccountAsync("ann");
        var (_, bob) = await host.CreateAccountAsync("bob");
        await host.Cache.StoreAsync(new StoreReq { Key = "shared", Val = Bytes("ann's") }, As(ann));
        await host.Cache.StoreAsync(new StoreReq { Key = "shared", Val = Bytes("bob's") }, As(bob));
        await host.Cache.StoreAsync(new StoreReq { Key = "ann-only", Val = Bytes("secret") }, As(ann));

        // Get: each sees its own value; the other's key does not exist for bob.
        Assert.Equal("ann's", (await host.Cache.GetAsync(new GetReq { Key = "shared" }, As(ann))).Val.ToStringUtf8());
        Assert.Equal("bob's", (await host.Cache.GetAsync(new GetReq { Key = "shared" }, As(bob))).Val.ToStringUtf8());
        await Fails(StatusCode.NotFound, async () => await host.Cache.GetAsync(new GetReq { Key = "ann-only" }, As(bob)));

        // Dump: only one's own.
        Assert.Equal(new Dictionary<string, string> { ["shared"] = "ann's", ["ann-only"] = "secret" }, await DumpAll(host, ann));
        Assert.Equal(new Dictionary<string, string> { ["shared"] = "bob's" }, await DumpAll(host, bob));

        // Delete: bob cannot delete ann's key; deleting his own leaves hers.
        await Fails(StatusCode.NotFound, async () => await host.Cache.DeleteAsync(new DeleteReq { Key = "ann-only" }, As(bob)));
        await host.Cache.DeleteAsync(new DeleteReq { Key = "shared" }, As(bob));
        Assert.Equal("ann's", (await host.Cache.GetAsync(new GetReq { Key = "shared" }, As(ann))).Val.ToStringUtf8());
        Assert.Equal("secret", (await host.Cache.GetAsync(new GetReq { Key = "ann-only" }, As(ann))).Val.ToStringUtf8());

        // Store: bob writing "ann-only" makes his own key and leaves hers.
        await host.Cache.StoreAsync(new StoreReq { Key = "ann-only", Val = Bytes("bob was here") }, As(bob));
        Assert.Equal("secret", (await host.Cache.GetAsync(new GetReq { Key = "ann-only" }, As(ann))).Val.ToStringUtf8());
        Assert.Equal(new Dictionary<string, string> { ["ann-only"] = "bob was here" }, await DumpAll(host, bob));
    }

    [Fact]
    public async Task The_key_quota_is_exact_under_64_concurrent_stores()
    {
        await using var host = await Start();
        const int maxKeys = 10;
        for (var round = 0; round < 3; round++)
        {
            var (id, token) = await host.CreateAccountAsync($"racer{round}", maxKeys: maxKeys);
            var results = await Task.WhenAll(Enumerable.Range(0, 64).Select(async i =>
            {
                try
                {
                    await host.Cache.StoreAsync(new StoreReq { Key = $"key{i}", Val = Bytes("v") }, As(token));
                    return (StatusCode.OK, (QuotaFailure?)null);
                }
                catch (RpcException ex)
                {
                    return (ex.StatusCode, ex.GetDetail<QuotaFailure>());
                }
            }));
            Assert.Equal(maxKeys, results.Count(r => r.Item1 == StatusCode.OK));
            Assert.All(results.Where(r => r.Item1 != StatusCode.OK), r =>
            {
                Assert.Equal(StatusCode.FailedPrecondition, r.Item1);
                Assert.Equal($"account:{id}", Assert.Single(r.Item2!.Violations).Subject);
            });
            var stored = await DumpAll(host, token);
            Assert.Equal(maxKeys, stored.Count);

            // At the quota, overwriting an existing key still works; a new key does not.
            await host.Cache.StoreAsync(new StoreReq { Key = stored.Keys.First(), Val = Bytes("again") }, As(token));
            await Fails(StatusCode.FailedPrecondition, async () => await host.Cache.StoreAsync(new StoreReq { Key = "one-more", Val = Bytes("v") }, As(token)));
            // Deleting one makes room for exactly one.
            await host.Cache.DeleteAsync(new DeleteReq { Key = stored.Keys.First() }, As(token));
            await host.Cache.StoreAsync(new StoreReq { Key = "one-more", Val = Bytes("v") }, As(token));
            await Fails(StatusCode.FailedPrecondition, async () => await host.Cache.StoreAsync(new StoreReq { Key = "two-more", Val = Bytes("v") }, As(token)));
        }
    }

    [Fact]
    public async Task A_value_over_the_accounts_size_quota_is_refused_and_the_old_value_kept()
    {
        await using var host = await Start();
        var (id, token) = await host.CreateAccountAsync(maxValueBytes: 100);
        await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFrom(new byte[100]) }, As(token));
        var ex = await Fails(StatusCode.FailedPrecondition, async () => await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFrom(new byte[101]) }, As(token)));
        Assert.Equal($"account:{id}", Assert.Single(ex.GetDetail<QuotaFailure>()!.Violations).Subject);
        Assert.Equal(100, (await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token))).Val.Length);
    }

    [Fact]
    public async Task Bad_keys_and_ttls_are_invalid_arguments_with_field_violations()
    {
        await using var host = await Start();
        var (_, token) = await host.CreateAccountAsync();
        var ex = await Fails(StatusCode.InvalidArgument, async () => await host.Cache.StoreAsync(new StoreReq { Key = "", Val = Bytes("v") }, As(token)));
        Assert.Equal("key", ex.GetDetail<BadRequest>()!.FieldViolations[0].Field);
        ex = await Fails(StatusCode.InvalidArgument, async () => await host.Cache.StoreAsync(new StoreReq { Key = new string('k', 1025), Val = Bytes("v") }, As(token)));
        Assert.Equal("key", ex.GetDetail<BadRequest>()!.FieldViolations[0].Field);
        ex = await Fails(StatusCode.InvalidArgument, async () => await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = Bytes("v"), Ttl = new Duration { Seconds = -1 } }, As(token)));
        Assert.Equal("ttl", ex.GetDetail<BadRequest>()!.FieldViolations[0].Field);
        await Fails(StatusCode.InvalidArgument, async () => await host.Cache.GetAsync(new GetReq { Key = "" }, As(token)));
    }

    [Fact]
    public async Task A_dry_run_validates_everything_and_changes_nothing()
    {
        await using var host = await Start();
        var (_, token) = await host.CreateAccountAsync(maxKeys: 2, maxValueBytes: 10);
        await host.Cache.StoreAsync(new StoreReq { Key = "kept", Val = Bytes("original") }, As(token));

        // Answers as if done...
        await host.Cache.StoreAsync(new StoreReq { Key = "new", Val = Bytes("v") }, As(token, dryRun: true));
        await host.Cache.StoreAsync(new StoreReq { Key = "kept", Val = Bytes("changed") }, As(token, dryRun: true));
        await host.Cache.DeleteAsync(new DeleteReq { Key = "kept" }, As(token, dryRun: true));
        // ...and validates as if done.
        await Fails(StatusCode.NotFound, async () => await host.Cache.DeleteAsync(new DeleteReq { Key = "absent" }, As(token, dryRun: true)));
        await Fails(StatusCode.FailedPrecondition, async () => await host.Cache.StoreAsync(new StoreReq { Key = "big", Val = Bytes("more than ten bytes") }, As(token, dryRun: true)));
        await Fails(StatusCode.Unauthenticated, async () => await host.Cache.StoreAsync(new StoreReq { Key = "x", Val = Bytes("v") }, As("cdt_unknown", dryRun: true)));
        await host.Cache.StoreAsync(new StoreReq { Key = "second", Val = Bytes("v") }, As(token));
        await Fails(StatusCode.FailedPrecondition, async () => await host.Cache.StoreAsync(new StoreReq { Key = "third", Val = Bytes("v") }, As(token, dryRun: true)));

        // Nothing changed.
        Assert.Equal(new Dictionary<string, string> { ["kept"] = "original", ["second"] = "v" }, await DumpAll(host, token));
    }

    [Fact]
    public async Task Keys_expire_after_their_ttl_and_stop_counting_against_the_quota()
    {
        await using var host = await Start();
        var (_, token) = await host.CreateAccountAsync(maxKeys: 2);
        await host.Cache.StoreAsync(new StoreReq { Key = "forever", Val = Bytes("v") }, As(token));
        await host.Cache.StoreAsync(new StoreReq { Key = "brief", Val = Bytes("v"), Ttl = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)) }, As(token));
        await Fails(StatusCode.FailedPrecondition, async () => await host.Cache.StoreAsync(new StoreReq { Key = "third", Val = Bytes("v") }, As(token)));
        await WaitUntilGone(host, token, "brief");
        await host.Cache.StoreAsync(new StoreReq { Key = "third", Val = Bytes("v") }, As(token));
        Assert.Equal(["forever", "third"], (await DumpAll(host, token)).Keys.Order());
    }

    /// <summary>Real time must pass for a TTL on a real server: waits (at most 10 s) until the key is gone.</summary>
    protected static async Task WaitUntilGone(CacheHost host, string token, string key)
    {
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (true)
        {
            try
            {
                await host.Cache.GetAsync(new GetReq { Key = key }, As(token));
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.NotFound)
            {
                return;
            }
            Assert.True(DateTime.UtcNow < until, $"key {key} did not expire");
            // Expiry is wall-clock time passing in the backend (Redis expires keys itself): there
            // is no event to wait on, so this asks again until the key is gone, bounded above.
            await Task.Delay(20);
        }
    }

    [Fact]
    public async Task A_dump_of_a_large_cache_is_streamed_lazily_and_complete()
    {
        CountingBackend? counting = null;
        await using var host = await Start(services: s => s.AddSingleton<ICacheBackend>(sp =>
            counting = new CountingBackend(sp.GetRequiredService<CacheOptions>().CreateBackend())));
        var (id, token) = await host.CreateAccountAsync(maxKeys: LargeDumpEntries);
        var backend = host.Services.GetRequiredService<ICacheBackend>();
        var value = new byte[256];
        for (var batch = 0; batch < LargeDumpEntries; batch += 1000)
        {
            await Task.WhenAll(Enumerable.Range(batch, Math.Min(1000, LargeDumpEntries - batch))
                .Select(i => backend.StoreAsync(id, $"k{i:D7}", value, null, LargeDumpEntries, false, default)));
        }

        using var call = host.Cache.Dump(new DumpReq(), As(token, timeout: TimeSpan.FromMinutes(2)));
        Assert.True(await call.ResponseStream.MoveNext());
        // The client has read one entry: the server has pulled only what fits in the HTTP/2
        // window and the write buffers (~128 KiB, some hundreds of entries), not the cache.
        var pulledAtFirst = counting!.Dumped;
        Assert.True(pulledAtFirst < LargeDumpEntries / 10, $"{pulledAtFirst} of {LargeDumpEntries} entries pulled before the client read the second");
        var seen = new HashSet<string> { call.ResponseStream.Current.Key };
        while (await call.ResponseStream.MoveNext())
        {
            Assert.True(seen.Add(call.ResponseStream.Current.Key));
            Assert.Equal(256, call.ResponseStream.Current.Val.Length);
        }
        Assert.Equal(LargeDumpEntries, seen.Count);
    }

    [Fact]
    public async Task Dumps_beyond_an_accounts_limit_are_refused_with_resource_exhausted_before_any_work()
    {
        CountingBackend? counting = null;
        await using var host = await Start(o => o.MaxConcurrentDumps = 1, s => s.AddSingleton<ICacheBackend>(sp =>
            counting = new CountingBackend(sp.GetRequiredService<CacheOptions>().CreateBackend())));
        var (_, token) = await host.CreateAccountAsync(maxKeys: 5000, maxValueBytes: 4096);
        await FillAsync(host, token, 200);

        using (var first = host.Cache.Dump(new DumpReq(), As(token)))
        {
            Assert.True(await first.ResponseStream.MoveNext()); // running, held back by flow control
            Assert.Equal(1, counting!.DumpCalls);
            // A second dump of the same account: refused before any backend work.
            var ex = await Fails(StatusCode.ResourceExhausted, async () => await DumpAll(host, token));
            Assert.NotNull(ex.GetDetail<RetryInfo>());
            Assert.Equal(1, counting.DumpCalls);
            // Without a token there is no account to count against.
            await Fails(StatusCode.Unauthenticated, async () => await DumpAll(host, null!));
        }
        // The first one is over (cancelled by dispose): the slot is free again once the server sees it.
        Assert.Equal(200, (await UntilAdmitted(() => DumpAll(host, token))).Count);
    }

    [Fact]
    public async Task An_account_holding_all_its_dump_slots_does_not_block_another_accounts_dump()
    {
        await using var host = await Start(o => o.MaxConcurrentDumps = 2);
        var (_, ann) = await host.CreateAccountAsync("ann", maxKeys: 5000, maxValueBytes: 4096);
        var (_, bob) = await host.CreateAccountAsync("bob");
        await FillAsync(host, ann, 200);
        await host.Cache.StoreAsync(new StoreReq { Key = "bob's", Val = Bytes("v") }, As(bob));

        using var one = host.Cache.Dump(new DumpReq(), As(ann));
        using var two = host.Cache.Dump(new DumpReq(), As(ann));
        Assert.True(await one.ResponseStream.MoveNext());
        Assert.True(await two.ResponseStream.MoveNext());
        await Fails(StatusCode.ResourceExhausted, async () => await DumpAll(host, ann));
        Assert.Equal(new Dictionary<string, string> { ["bob's"] = "v" }, await DumpAll(host, bob));
    }

    [Fact]
    public async Task A_ttl_under_100_ns_expires_instead_of_meaning_no_expiry()
    {
        await using var host = await Start();
        var (_, token) = await host.CreateAccountAsync();
        await host.Cache.StoreAsync(new StoreReq { Key = "fleeting", Val = Bytes("v"), Ttl = new Duration { Nanos = 50 } }, As(token));
        // 50 ns is rounded up to a tick (the memory backend) or a millisecond (Redis): it expires.
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (true)
        {
            try
            {
                await host.Cache.GetAsync(new GetReq { Key = "fleeting" }, As(token));
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.NotFound)
            {
                break;
            }
            Assert.True(DateTime.UtcNow < until, "a key stored with a 50 ns TTL is still there after 5 s");
            await Task.Delay(5);
        }
    }

    [Fact]
    public async Task Keys_that_are_not_valid_UTF8_are_refused_so_two_never_become_one_entry()
    {
        await using var host = await Start();
        var (_, token) = await host.CreateAccountAsync();
        // "k" then 0xFF, and "k" then 0xFE: both would read as "k\uFFFD" if invalid UTF-8 were
        // replaced. Google.Protobuf refuses them before the handler runs: INVALID_ARGUMENT (StrictParsing).
        foreach (var key in new byte[][] { [(byte)'k', 0xFF], [(byte)'k', 0xFE], [0xC0, 0xAF] })
        {
            var request = RawCalls.Field(1, key).Concat(RawCalls.Field(2, "v"u8.ToArray())).ToArray();
            await Fails(StatusCode.InvalidArgument, () => RawCalls.UnaryAsync(host.Channel, "/cache.v1.Cache/Store", request, As(token)));
            await Fails(StatusCode.InvalidArgument, () => RawCalls.UnaryAsync(host.Channel, "/cache.v1.Cache/Get", RawCalls.Field(1, key), As(token)));
        }
        Assert.Empty(await DumpAll(host, token));
    }

    protected static async Task FillAsync(CacheHost host, string token, int count, int valueBytes = 4096)
    {
        var value = ByteString.CopyFrom(new byte[valueBytes]);
        await Task.WhenAll(Enumerable.Range(0, count).Select(i => host.Cache.StoreAsync(new StoreReq { Key = $"k{i}", Val = value }, As(token)).ResponseAsync));
    }
}

public sealed class EmbeddedCacheTests : CacheSuite
{
    protected override CacheOptions Options() => new();

    protected override int LargeDumpEntries => 100_000;
}

/// <summary>The suite on a Redis that needs AUTH: every call goes through an ACL user's password.</summary>
public sealed class RedisCacheTests(PasswordRedisServer redis) : CacheSuite, IClassFixture<PasswordRedisServer>
{
    protected override CacheOptions Options() => new() { Backend = redis.Url, RedisKeyPrefix = $"test{Guid.NewGuid():N}:" };

    protected override int LargeDumpEntries => 30_000;

    [Fact]
    public async Task Two_servers_on_one_redis_share_the_cache_and_the_quota_stays_exact_across_them()
    {
        var prefix = $"shared{Guid.NewGuid():N}:";
        await using var one = await CacheHost.StartAsync(new CacheOptions { Backend = redis.Url, RedisKeyPrefix = prefix });
        await using var two = await CacheHost.StartAsync(new CacheOptions { Backend = redis.Url, RedisKeyPrefix = prefix, AccountsUrl = one.Address });
        var (_, token) = await one.CreateAccountAsync(maxKeys: 10);

        await one.Cache.StoreAsync(new StoreReq { Key = "from-one", Val = Bytes("1") }, As(token));
        Assert.Equal("1", (await two.Cache.GetAsync(new GetReq { Key = "from-one" }, As(token))).Val.ToStringUtf8());
        await two.Cache.DeleteAsync(new DeleteReq { Key = "from-one" }, As(token));
        await Fails(StatusCode.NotFound, async () => await one.Cache.GetAsync(new GetReq { Key = "from-one" }, As(token)));

        var results = await Task.WhenAll(Enumerable.Range(0, 64).Select(async i =>
        {
            var server = i % 2 == 0 ? one : two;
            try
            {
                await server.Cache.StoreAsync(new StoreReq { Key = $"key{i}", Val = Bytes("v") }, As(token));
                return StatusCode.OK;
            }
            catch (RpcException ex)
            {
                return ex.StatusCode;
            }
        }));
        Assert.Equal(10, results.Count(r => r == StatusCode.OK));
        Assert.Equal(54, results.Count(r => r == StatusCode.FailedPrecondition));
        Assert.Equal(10, (await DumpAll(two, token)).Count);
    }
}
