using Conduit.Grpc;
using Conduit.Protos.Cache.V1;
using Conduit.Services.Cache;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
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
    public async Task Past_the_memory_bound_the_least_recently_used_entries_of_any_account_are_evicted()
    {
        var entry = MemoryCacheBackend.SizeOf("k00", new byte[1000]);
        var backend = new MemoryCacheBackend(10 * entry);
        await using var host = await StartAsync(services: s => s.AddSingleton<ICacheBackend>(backend));
        var (_, ann) = await host.CreateAccountAsync("ann");
        var (_, bob) = await host.CreateAccountAsync("bob");
        var value = ByteString.CopyFrom(new byte[1000]);
        for (var i = 0; i < 5; i++) await host.Cache.StoreAsync(new StoreReq { Key = $"k{i:D2}", Val = value }, As(ann));
        for (var i = 5; i < 10; i++) await host.Cache.StoreAsync(new StoreReq { Key = $"k{i:D2}", Val = value }, As(bob));
        Assert.Equal(10 * entry, backend.UsedBytes);
        // Touch ann's oldest, k00: k01 and k02 are now the least recently used.
        await host.Cache.GetAsync(new GetReq { Key = "k00" }, As(ann));
        for (var i = 10; i < 12; i++) await host.Cache.StoreAsync(new StoreReq { Key = $"k{i}", Val = value }, As(bob));
        Assert.Equal(2, backend.Evictions);
        Assert.True(backend.UsedBytes <= backend.MaxBytes);
        Assert.Equal(["k00", "k03", "k04"], (await Keys(host, ann)).Order());
        Assert.Equal(["k05", "k06", "k07", "k08", "k09", "k10", "k11"], (await Keys(host, bob)).Order());

        // An entry larger than the whole cache is refused without evicting anything.
        var (_, big) = await host.CreateAccountAsync("big", maxValueBytes: 1 << 20);
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Cache.StoreAsync(new StoreReq { Key = "huge", Val = ByteString.CopyFrom(new byte[20_000]) }, As(big)));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        Assert.Equal(2, backend.Evictions);
    }

    private static async Task<List<string>> Keys(CacheHost host, string token)
    {
        var keys = new List<string>();
        using var call = host.Cache.Dump(new DumpReq(), As(token));
        while (await call.ResponseStream.MoveNext()) keys.Add(call.ResponseStream.Current.Key);
        return keys;
    }
}
