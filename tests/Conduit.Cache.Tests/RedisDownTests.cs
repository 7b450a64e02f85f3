using Conduit.Protos.Cache.V1;
using Conduit.Rpc;
using Conduit.Services.Cache;
using Google.Protobuf;
using Google.Rpc;
using static Conduit.Cache.Tests.CacheHost;

namespace Conduit.Cache.Tests;

public class RedisDownTests
{
    [Fact]
    public async Task An_unreachable_redis_is_unavailable_with_retry_info_on_every_rpc()
    {
        await using var host = await StartAsync(new CacheOptions { Backend = $"redis://127.0.0.1:{Ports.Free()}" });
        var (_, token) = await host.CreateAccountAsync();
        foreach (var call in new Func<Task>[]
        {
            async () => await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("v") }, As(token)),
            async () => await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token)),
            async () => await host.Cache.DeleteAsync(new DeleteReq { Key = "k" }, As(token)),
            async () =>
            {
                using var dump = host.Cache.Dump(new DumpReq(), As(token));
                while (await dump.ResponseStream.MoveNext()) { }
            },
        })
        {
            var ex = await Assert.ThrowsAsync<RpcException>(call);
            Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
            Assert.NotNull(ex.GetDetail<RetryInfo>());
        }
    }

    [Fact]
    public async Task Redis_restarted_under_a_running_server_is_used_again()
    {
        var redis = new RedisServer();
        await redis.InitializeAsync();
        var url = redis.Url;
        await using var host = await StartAsync(new CacheOptions { Backend = url, RedisConnections = 1 });
        var (_, token) = await host.CreateAccountAsync();
        await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("v") }, As(token));
        await redis.DisposeAsync();
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token)));
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);

        await using var again = await RedisServer.StartOnAsync(redis.Port);
        // Its data is gone (no persistence), but the server reconnects and works.
        await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("w") }, As(token));
        Assert.Equal("w", (await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token))).Val.ToStringUtf8());
    }
}
