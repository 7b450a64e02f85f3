using Conduit.Grpc;
using Conduit.Protos.Cache.V1;
using Conduit.Services.Cache;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using static Conduit.Cache.Tests.CacheHost;

namespace Conduit.Cache.Tests;

/// <summary>What only the embedded backend does: exact TTLs on a clock the test moves, the memory bound.</summary>
public class EmbeddedBackendTests
{
    [Fact]
    public async Task A_key_lives_exactly_its_ttl()
    {
        var time = new ManualTime();
        await using var host = await StartAsync(services: s => s.AddSingleton<ICacheBackend>(new MemoryCacheBackend(1 << 20, time)));
        var (_, token) = await host.CreateAccountAsync();
        await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("v"), Ttl = Duration.FromTimeSpan(TimeSpan.FromSeconds(10)) }, As(token));
        await host.Cache.StoreAsync(new StoreReq { Key = "plain", Val = ByteString.CopyFromUtf8("v") }, As(token));
        time.Advance(TimeSpan.FromSeconds(10) - TimeSpan.FromTicks(1));
        Assert.Equal("v", (await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token))).Val.ToStringUtf8());
        time.Advance(TimeSpan.FromTicks(1));
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token)));
        Assert.Equal(StatusCode.NotFound, ex.StatusCode);
        time.Advance(TimeSpan.FromDays(365));
        Assert.Equal("v", (await host.Cache.GetAsync(new GetReq { Key = "plain" }, As(token))).Val.ToStringUtf8());
        // Storing again without a TTL makes the key permanent.
        await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("w"), Ttl = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)) }, As(token));
        await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("x") }, As(token));
        time.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal("x", (await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token))).Val.ToStringUtf8());
    }

    [Fact]
    public async Task Past_the_memory_bound_an_account_above_its_share_loses_its_least_recently_used_entries()
    {
        var entry = MemoryCacheBackend.SizeOf("k00", new byte[1000]);
        var backend = new MemoryCacheBackend(10 * entry);
        await using var host = await StartAsync(services: s => s.AddSingleton<ICacheBackend>(backend));
        var (_, ann) = await host.CreateAccountAsync("ann", maxValueBytes: 1 << 20);
        var (_, bob) = await host.CreateAccountAsync("bob");
        var value = ByteString.CopyFrom(new byte[1000]);
        for (var i = 0; i < 5; i++) await host.Cache.StoreAsync(new StoreReq { Key = $"k{i:D2}", Val = value }, As(ann));
        for (var i = 5; i < 10; i++) await host.Cache.StoreAsync(new StoreReq { Key = $"k{i:D2}", Val = value }, As(bob));
        Assert.Equal(10 * entry, backend.UsedBytes);
        // Two accounts: a share is 5 entries each. Bob touches his oldest, k05: k06 and k07 are
        // now his least recently used. Ann's entries are older, but she is not above her share.
        await host.Cache.GetAsync(new GetReq { Key = "k05" }, As(bob));
        for (var i = 10; i < 12; i++) await host.Cache.StoreAsync(new StoreReq { Key = $"k{i}", Val = value }, As(bob));
        Assert.Equal(2, backend.Evictions);
        Assert.True(backend.UsedBytes <= backend.MaxBytes);
        Assert.Equal(["k00", "k01", "k02", "k03", "k04"], (await Keys(host, ann)).Order());
        Assert.Equal(["k05", "k08", "k09", "k10", "k11"], (await Keys(host, bob)).Order());

        // An entry that would fit only by taking bob below his share is refused, and ann keeps
        // what she had (a refused store evicts nothing).
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Cache.StoreAsync(new StoreReq { Key = "big", Val = ByteString.CopyFrom(new byte[7000]) }, As(ann)));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        Assert.Equal("CACHE_SHARE_EXCEEDED", ex.GetDetail<Google.Rpc.ErrorInfo>()?.Reason);
        Assert.Equal(5, (await Keys(host, ann)).Count);
        Assert.Equal(2, backend.Evictions);

        // An entry larger than the whole cache is refused without evicting anything.
        var (_, big) = await host.CreateAccountAsync("big", maxValueBytes: 1 << 20);
        ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Cache.StoreAsync(new StoreReq { Key = "huge", Val = ByteString.CopyFrom(new byte[20_000]) }, As(big)));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        Assert.Equal(2, backend.Evictions);
    }

    [Fact]
    public async Task Three_hundred_1_MiB_values_of_one_account_do_not_evict_another_below_its_share()
    {
        const int MiB = 1 << 20;
        var backend = new MemoryCacheBackend(32L * MiB);
        await using var host = await StartAsync(services: s => s.AddSingleton<ICacheBackend>(backend));
        var (_, ann) = await host.CreateAccountAsync("ann", maxValueBytes: 2 * MiB);
        var (_, bob) = await host.CreateAccountAsync("bob", maxValueBytes: 2 * MiB);
        var value = ByteString.CopyFrom(new byte[MiB]);
        for (var i = 0; i < 10; i++) await host.Cache.StoreAsync(new StoreReq { Key = $"bob{i}", Val = value }, As(bob));
        for (var i = 0; i < 300; i++) await host.Cache.StoreAsync(new StoreReq { Key = $"ann{i}", Val = value }, As(ann));
        Assert.True(backend.UsedBytes <= backend.MaxBytes);
        // Bob's 10 MiB are under his share (16 MiB): all still there; ann has the rest.
        Assert.Equal(10, (await Keys(host, bob)).Count);
        Assert.InRange((await Keys(host, ann)).Count, 20, 22);
        // Bob can still grow to his share: ann's entries make room.
        for (var i = 10; i < 15; i++) await host.Cache.StoreAsync(new StoreReq { Key = $"bob{i}", Val = value }, As(bob));
        Assert.Equal(15, (await Keys(host, bob)).Count);
    }

    [Fact]
    public async Task A_dump_whose_client_reads_nothing_loses_its_slot_after_the_idle_timeout()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var host = await StartAsync(services: s => s.AddSingleton(new DumpLimiter(1, TimeSpan.FromSeconds(30), time)));
        var (_, token) = await host.CreateAccountAsync(maxKeys: 5000, maxValueBytes: 4096);
        var value = ByteString.CopyFrom(new byte[4096]);
        await Task.WhenAll(Enumerable.Range(0, 200).Select(i => host.Cache.StoreAsync(new StoreReq { Key = $"k{i}", Val = value }, As(token)).ResponseAsync));

        using var stuck = host.Cache.Dump(new DumpReq(), As(token, timeout: TimeSpan.FromMinutes(5)));
        Assert.True(await stuck.ResponseStream.MoveNext()); // and never reads again: the server's writes wait
        time.Advance(TimeSpan.FromSeconds(29));
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await Keys(host, token));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        // Past the idle timeout the stuck dump ends and its slot serves the next dump.
        var keys = await UntilAdmitted(() => Keys(host, token), () => time.Advance(TimeSpan.FromSeconds(30)));
        Assert.Equal(200, keys.Count);
    }

    private static async Task<List<string>> Keys(CacheHost host, string token)
    {
        var keys = new List<string>();
        using var call = host.Cache.Dump(new DumpReq(), As(token));
        while (await call.ResponseStream.MoveNext()) keys.Add(call.ResponseStream.Current.Key);
        return keys;
    }
}
