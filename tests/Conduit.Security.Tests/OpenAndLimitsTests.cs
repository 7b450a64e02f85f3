using System.Globalization;
using Conduit.Grpc;
using Conduit.Hosting;
using Conduit.Protos.HelloWorld;
using Google.Rpc;
using Grpc.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Security.Tests;

public class OpenAndLimitsTests
{
    private static IConfiguration Config(Dictionary<string, string?> settings) => new ConfigurationBuilder().AddInMemoryCollection(settings).Build();

    [Theory]
    [InlineData("http://0.0.0.0:0")]
    [InlineData("https://10.1.2.3:0")]
    [InlineData("http://[::]:0")]
    public void Without_a_policy_only_loopback_may_be_bound(string url)
    {
        var ex = Assert.Throws<ArgumentException>(() => ConduitHost.Build(new ServeOptions { Urls = ["http://127.0.0.1:0", url] }, Config([])));
        Assert.Contains($"'{url}' is not a loopback address", ex.Message, StringComparison.Ordinal);
        Assert.Contains("--policy FILE", ex.Message, StringComparison.Ordinal);
        Assert.Contains("--allow-open", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_web_listener_is_judged_like_any_other()
    {
        // "none" is no address: no web listener, nothing to refuse.
        await using (ConduitHost.Build(new ServeOptions { Urls = ["http://127.0.0.1:0"], WebUrls = ["none"] }, Config([]))) { }
        var ex = Assert.Throws<ArgumentException>(() => ConduitHost.Build(new ServeOptions { Urls = ["http://127.0.0.1:0"], WebUrls = ["http://0.0.0.0:0"] }, Config([])));
        Assert.Contains("'http://0.0.0.0:0' is not a loopback address", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Loopback_or_an_explicit_override_builds()
    {
        await using (ConduitHost.Build(new ServeOptions { Urls = ["http://127.0.0.1:0", "http://localhost:50599", "http://[::1]:0"] }, Config([]))) { }
        // Built, never started: a test binds loopback only.
        await using (ConduitHost.Build(new ServeOptions { Urls = ["http://0.0.0.0:0"] }, Config(new() { ["Conduit:Security:AllowOpen"] = "true" }))) { }
    }

    [Fact]
    public async Task Client_certificates_without_a_ca_stop_the_start()
    {
        var ex = Assert.Throws<ArgumentException>(() => ConduitHost.Build(new ServeOptions { Urls = ["http://127.0.0.1:0"] },
            Config(new() { ["Conduit:Security:ClientCertificates"] = "Required" })));
        Assert.Contains("--client-ca", ex.Message, StringComparison.Ordinal);
        await Task.CompletedTask;
    }

    /// <summary>An operator token "op", and <paramref name="permits"/> calls an hour per principal.</summary>
    private static Task<SecureHost> StartLimited(int permits) => SecureHost.StartAsync(new()
    {
        ["Conduit:Security:OperatorToken"] = "op",
        ["Conduit:Security:RateLimit:Permits"] = permits.ToString(CultureInfo.InvariantCulture),
        ["Conduit:Security:RateLimit:Period"] = "01:00:00",
    });

    [Fact]
    public async Task A_rate_limited_principal_gets_resource_exhausted_with_retry_info_and_pushback()
    {
        await using var host = await StartLimited(2);
        var greeter = new Greeter.GreeterClient(host.Channel);
        await greeter.SayHelloAsync(new HelloRequest { Name = "1" }, SecureHost.Call("op"));
        await greeter.SayHelloAsync(new HelloRequest { Name = "2" }, SecureHost.Call("op"));
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await greeter.SayHelloAsync(new HelloRequest { Name = "3" }, SecureHost.Call("op")));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        Assert.StartsWith("Too many calls from 'operator'", ex.Status.Detail, StringComparison.Ordinal);
        var delay = ex.GetDetail<RetryInfo>()!.RetryDelay.ToTimeSpan();
        Assert.InRange(delay, TimeSpan.FromMinutes(59), TimeSpan.FromHours(1));
        // The hour's wait outlives the call's 10 s deadline: "do not retry" (-1), so the client
        // (whose default service config retries SayHello) fails now instead of at its deadline.
        Assert.Equal("-1", ex.Trailers.GetValue("grpc-retry-pushback-ms"));

        // Per principal: someone else (here: no identity, limited per address) still has calls.
        Assert.Equal("Hello 4", (await greeter.SayHelloAsync(new HelloRequest { Name = "4" }, SecureHost.Call())).Message);
    }

    [Fact]
    public async Task The_caches_own_token_lookups_use_no_callers_calls()
    {
        await using var host = await StartLimited(3);
        var accounts = new Protos.Accounts.V1.Accounts.AccountsClient(host.Channel);
        var greeter = new Greeter.GreeterClient(host.Channel);
        for (var i = 0; i < 3; i++)
        {
            // Each new account's first call makes the server look its token up over loopback, anonymously.
            var token = (await accounts.CreateAccountAsync(new Protos.Accounts.V1.CreateAccountReq { Name = "a" + i }, SecureHost.Call("op"))).Token;
            await greeter.SayHelloAsync(new HelloRequest { Name = "account" }, SecureHost.Call(token));
        }
        // The loopback address's anonymous bucket is still full.
        for (var i = 0; i < 3; i++) await greeter.SayHelloAsync(new HelloRequest { Name = "anonymous" }, SecureHost.Call());
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await greeter.SayHelloAsync(new HelloRequest { Name = "x" }, SecureHost.Call()));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
    }

    [Fact]
    public async Task A_loopback_caller_guessing_tokens_through_GetByToken_is_rate_limited_like_any_other()
    {
        // A local proxy forwards remote clients from a loopback address: that must not make token
        // guessing unthrottled. Only the cache's own lookups (with this process's secret) are exempt.
        await using var host = await StartLimited(3);
        var accounts = new Protos.Accounts.V1.Accounts.AccountsClient(host.Channel);
        for (var i = 0; i < 3; i++)
        {
            var guess = await Assert.ThrowsAsync<RpcException>(async () => await accounts.GetByTokenAsync(new Protos.Accounts.V1.GetByTokenReq { Token = "guess-" + i }, SecureHost.Call()));
            Assert.NotEqual(StatusCode.ResourceExhausted, guess.StatusCode);
        }
        var limited = await Assert.ThrowsAsync<RpcException>(async () => await accounts.GetByTokenAsync(new Protos.Accounts.V1.GetByTokenReq { Token = "guess-4" }, SecureHost.Call()));
        Assert.Equal(StatusCode.ResourceExhausted, limited.StatusCode);
    }

    [Fact]
    public async Task Random_bearer_tokens_cost_an_accounts_lookup_only_while_the_callers_bucket_has_room()
    {
        // Authentication runs before the rate limiter: without a limit of its own, every random
        // token would be one Accounts lookup.
        await using var host = await StartLimited(3);
        var greeter = new Greeter.GreeterClient(host.Channel);
        var lookups = host.Services.GetRequiredService<Conduit.Services.Cache.AccountsLookup>();
        var before = lookups.RemoteLookups;
        for (var i = 0; i < 10; i++)
        {
            try
            {
                await greeter.SayHelloAsync(new HelloRequest { Name = "x" }, SecureHost.Call("random-" + i));
            }
            catch (RpcException)
            {
                // Anonymous and limited per address too: what is counted here is the lookups.
            }
        }
        Assert.InRange(lookups.RemoteLookups - before, 1, 3);
    }
}
