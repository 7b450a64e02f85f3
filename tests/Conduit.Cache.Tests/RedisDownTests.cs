using Conduit.Protos.Cache.V1;
using Conduit.Services.Cache;
using Google.Protobuf;
using Google.Rpc;
using Microsoft.Extensions.DependencyInjection;
using StackExchange.Redis;
using static Conduit.Cache.Tests.CacheHost;

namespace Conduit.Cache.Tests;

public class RedisDownTests
{
    /// <summary>Every Cache RPC of a token; each must fail.</summary>
    internal static Func<Task>[] EveryRpc(CacheHost host, string token) =>
    [
        async () => await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("v") }, As(token)),
        async () => await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token)),
        async () => await host.Cache.DeleteAsync(new DeleteReq { Key = "k" }, As(token)),
        async () =>
        {
            using var dump = host.Cache.Dump(new DumpReq(), As(token));
            while (await dump.ResponseStream.MoveNext()) { }
        },
    ];

    [Fact]
    public async Task An_unreachable_redis_is_unavailable_with_retry_info_on_every_rpc()
    {
        await using var host = await StartAsync(new CacheOptions { Backend = $"redis://127.0.0.1:{Ports.Free()}" });
        var (_, token) = await host.CreateAccountAsync();
        foreach (var call in EveryRpc(host, token))
        {
            var ex = await Assert.ThrowsAsync<RpcException>(call);
            Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
            Assert.NotNull(ex.GetDetail<RetryInfo>());
            Assert.Equal("BACKEND_UNAVAILABLE", ex.GetDetail<ErrorInfo>()?.Reason);
        }
    }

    [Fact]
    public async Task Redis_restarted_under_a_running_server_is_used_again()
    {
        var redis = new RedisServer();
        await redis.InitializeAsync();
        await using var host = await StartAsync(new CacheOptions { Backend = redis.Url });
        var (_, token) = await host.CreateAccountAsync();
        await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("v") }, As(token));

        // StackExchange.Redis reconnects in the background (it does not wait for the next
        // command): the test waits for its "connection restored" event, not for time to pass.
        var connection = await ((RedisCacheBackend)host.Services.GetRequiredService<ICacheBackend>()).ConnectionAsync();
        var restored = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        connection.ConnectionRestored += (_, e) =>
        {
            if (e.ConnectionType == ConnectionType.Interactive) restored.TrySetResult();
        };
        await redis.DisposeAsync();
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token)));
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
        Assert.NotNull(ex.GetDetail<RetryInfo>());

        await using var again = await RedisServer.StartOnAsync(redis.Port);
        await restored.Task.WaitAsync(TimeSpan.FromSeconds(30));
        // Its data is gone (no persistence), but the server reconnected and works.
        await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("w") }, As(token));
        Assert.Equal("w", (await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token))).Val.ToStringUtf8());
    }
}

public class RedisAddressTests
{
    [Theory]
    [InlineData("redis://user@127.0.0.1:6379")] // a user without a password
    [InlineData("redis://127.0.0.1:6379/zero")] // a database that is not a number
    [InlineData("http://127.0.0.1:6379")]
    [InlineData("127.0.0.1:6379")]
    public void A_malformed_backend_address_is_refused_at_start(string backend) =>
        Assert.Throws<ArgumentException>(() => new CacheOptions { Backend = backend }.CreateBackend());

    [Fact]
    public void The_uri_says_where_who_and_how()
    {
        var plain = RedisCacheBackend.Configure(new Uri("redis://127.0.0.1/3"));
        Assert.Equal(("127.0.0.1:6379", (string?)null, (string?)null, 3, false),
            (plain.EndPoints.Single().ToString()?.Replace("Unspecified/", "", StringComparison.Ordinal), plain.User, plain.Password, plain.DefaultDatabase, plain.Ssl));
        var secure = RedisCacheBackend.Configure(new Uri("rediss://app%40ops:p%3Aw%2Fd%23@redis.example:6380"));
        Assert.Equal(("app@ops", "p:w/d#", true), (secure.User, secure.Password, secure.Ssl));
        var defaultUser = RedisCacheBackend.Configure(new Uri("redis://:only-a-password@127.0.0.1:6379"));
        Assert.Equal(((string?)null, "only-a-password"), (defaultUser.User, defaultUser.Password));
        Assert.Throws<ArgumentException>(() => RedisCacheBackend.Configure(new Uri("redis://127.0.0.1:6379"), tlsCaFile: "/any/ca.pem"));
    }
}

/// <summary>AUTH: the default user's password (requirepass) and an ACL user, from the URI; a wrong one is UNAVAILABLE.</summary>
public class RedisAuthTests(PasswordRedisServer redis) : IClassFixture<PasswordRedisServer>
{
    [Theory]
    [InlineData("acl-user")]
    [InlineData("requirepass")]
    public async Task The_cache_authenticates_with_the_password_in_the_url(string who)
    {
        var url = who == "acl-user"
            ? redis.Url
            : $"redis://:{Uri.EscapeDataString(redis.Password!)}@127.0.0.1:{redis.Port}/2";
        await using var host = await StartAsync(new CacheOptions { Backend = url, RedisKeyPrefix = $"auth{Guid.NewGuid():N}:" });
        var (_, token) = await host.CreateAccountAsync();
        await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8(who) }, As(token));
        Assert.Equal(who, (await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token))).Val.ToStringUtf8());
    }

    [Theory]
    [InlineData("no password")]
    [InlineData("wrong password")]
    [InlineData("wrong user")]
    public async Task Without_the_right_password_every_rpc_is_unavailable_and_the_password_is_never_echoed(string how)
    {
        var url = how switch
        {
            "no password" => $"redis://127.0.0.1:{redis.Port}",
            "wrong password" => $"redis://:not-the-password-1234@127.0.0.1:{redis.Port}",
            _ => $"redis://nobody:not-the-password-1234@127.0.0.1:{redis.Port}",
        };
        await using var host = await StartAsync(new CacheOptions { Backend = url });
        var (_, token) = await host.CreateAccountAsync();
        foreach (var call in RedisDownTests.EveryRpc(host, token))
        {
            var ex = await Assert.ThrowsAsync<RpcException>(call);
            Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
            Assert.NotNull(ex.GetDetail<RetryInfo>());
            Assert.DoesNotContain("not-the-password-1234", ex.Status.Detail, StringComparison.Ordinal);
        }
    }
}

/// <summary>rediss://: TLS to Redis, trusting its certificate through Conduit:Cache:RedisTlsCaFile.</summary>
public class RedisTlsTests(TlsRedisServer redis) : IClassFixture<TlsRedisServer>
{
    [Fact]
    public async Task Over_rediss_the_cache_works_when_it_trusts_the_servers_certificate()
    {
        await using var host = await StartAsync(new CacheOptions { Backend = redis.Url, RedisTlsCaFile = redis.CertFile });
        var (_, token) = await host.CreateAccountAsync(maxKeys: 1);
        await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("secure") }, As(token));
        Assert.Equal("secure", (await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token))).Val.ToStringUtf8());
        // The Lua check-and-set runs over TLS too.
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Cache.StoreAsync(new StoreReq { Key = "k2", Val = ByteString.CopyFromUtf8("v") }, As(token)));
        Assert.Equal(StatusCode.FailedPrecondition, ex.StatusCode);
    }

    [Fact]
    public async Task Over_rediss_a_certificate_nobody_vouches_for_is_unavailable()
    {
        await using var host = await StartAsync(new CacheOptions { Backend = redis.Url });
        var (_, token) = await host.CreateAccountAsync();
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token)));
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
    }

    [Fact]
    public async Task Plain_redis_to_a_tls_port_is_unavailable()
    {
        await using var host = await StartAsync(new CacheOptions { Backend = $"redis://:{redis.Password}@127.0.0.1:{redis.Port}" });
        var (_, token) = await host.CreateAccountAsync();
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Cache.GetAsync(new GetReq { Key = "k" }, As(token)));
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
    }
}
