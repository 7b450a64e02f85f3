using Conduit.Grpc;
using Conduit.Hosting;
using Conduit.Services.Cache;
using Conduit.Services.Greeter;
using Conduit.Users.Storage;
using Grpc.Core;
using Grpc.Health.V1;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using ServingStatus = Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus;

namespace Conduit.Web.Tests;

/// <summary>grpc.health.v1.Health: overall and per service, wired to what each service needs, and shutdown.</summary>
public class HealthTests
{
    private static readonly CallOptions Deadline = new(deadline: DateTime.UtcNow.AddSeconds(30));

    private static async Task<ServingStatus> Check(InProcessServer server, string service) =>
        (await new Health.HealthClient(server.Channel).CheckAsync(new HealthCheckRequest { Service = service }, Deadline.WithDeadline(DateTime.UtcNow.AddSeconds(10)))).Status;

    /// <summary>A server with the Greeter (which needs nothing) next to what a test adds.</summary>
    private static Task<InProcessServer> WithGreeter(Action<IServiceCollection> services, Action<WebApplication> map) =>
        InProcessServer.StartAsync(
            s =>
            {
                s.AddSingleton<GreeterService>();
                services(s);
            },
            a =>
            {
                a.MapGrpcService<GreeterService>();
                map(a);
            });

    [Fact]
    public async Task Every_mapped_service_and_the_whole_server_are_serving_and_an_unknown_service_is_not_found()
    {
        await using var server = await Servers.Full();
        var names = GrpcCalls.ServiceNames(server.Services);
        Assert.Contains("log.v1.Log", names);
        Assert.Contains("rpc.Cache", names);
        Assert.Contains("grpc.reflection.v1.ServerReflection", names);
        Assert.Equal(ServingStatus.Serving, await Check(server, ""));
        foreach (var name in names) Assert.True(await Check(server, name) == ServingStatus.Serving, name);

        var unknown = await Assert.ThrowsAsync<RpcException>(() => Check(server, "no.such.Service"));
        Assert.Equal(StatusCode.NotFound, unknown.StatusCode);
    }

    [Fact]
    public async Task Watch_answers_at_once_per_service_and_unknown_services_are_service_unknown()
    {
        await using var server = await Servers.Full();
        var health = new Health.HealthClient(server.Channel);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        foreach (var (service, expected) in new[] { ("", ServingStatus.Serving), ("cache.v1.Cache", ServingStatus.Serving), ("no.such.Service", ServingStatus.ServiceUnknown) })
        {
            using var watch = health.Watch(new HealthCheckRequest { Service = service }, cancellationToken: cts.Token);
            Assert.True(await watch.ResponseStream.MoveNext(cts.Token));
            Assert.Equal(expected, watch.ResponseStream.Current.Status);
        }
    }

    [Fact]
    public async Task A_users_database_that_cannot_be_reached_makes_the_users_service_not_serving_and_nothing_else()
    {
        using var data = new TempDir();
        // A PostgreSQL address nothing listens on; the server must start anyway (no migration at start).
        var database = $"Host=127.0.0.1;Port={Ports.Free()};Database=conduit;Username=conduit;Timeout=2";
        await using var server = await WithGreeter(s => s.AddUsers(_ => UserStores.Open(database, data.Path), migrateAtStart: false), a => a.MapUsers());
        Assert.Equal(ServingStatus.NotServing, await Check(server, "user.v1.UserService"));
        Assert.Equal(ServingStatus.Serving, await Check(server, "helloworld.Greeter"));
        Assert.Equal(ServingStatus.NotServing, await Check(server, ""));

        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using var watch = new Health.HealthClient(server.Channel).Watch(new HealthCheckRequest { Service = "user.v1.UserService" }, cancellationToken: cts.Token);
        Assert.True(await watch.ResponseStream.MoveNext(cts.Token));
        Assert.Equal(ServingStatus.NotServing, watch.ResponseStream.Current.Status);
    }

    [Fact]
    public async Task Accounts_out_of_the_caches_reach_makes_the_cache_not_serving_and_nothing_else()
    {
        using var data = new TempDir();
        var serve = new ServeOptions { DataDir = data.Path };
        await using var server = await WithGreeter(
            s =>
            {
                CacheHosting.AddCache(s, new CacheOptions { AccountsUrl = $"http://127.0.0.1:{Ports.Free()}" }, serve);
                SeedsHosting.AddSeeds(s);
            },
            a =>
            {
                CacheHosting.Map(a);
                SeedsHosting.MapSeeds(a);
            });
        Assert.Equal(ServingStatus.NotServing, await Check(server, "cache.v1.Cache"));
        Assert.Equal(ServingStatus.NotServing, await Check(server, "rpc.Cache"));
        Assert.Equal(ServingStatus.Serving, await Check(server, "helloworld.Greeter"));
        Assert.Equal(ServingStatus.Serving, await Check(server, "proto.Greeter"));
        Assert.Equal(ServingStatus.NotServing, await Check(server, ""));
    }

    [Fact]
    public async Task A_redis_backend_that_cannot_be_reached_makes_the_cache_not_serving_within_the_check_timeout()
    {
        using var data = new TempDir();
        var serve = new ServeOptions { DataDir = data.Path };
        await using var server = await WithGreeter(s => CacheHosting.AddCache(s, new CacheOptions { Backend = $"redis://127.0.0.1:{Ports.Free()}" }, serve), CacheHosting.Map);
        var started = DateTime.UtcNow;
        Assert.Equal(ServingStatus.NotServing, await Check(server, "cache.v1.Cache"));
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(5), $"took {DateTime.UtcNow - started}");
        Assert.Equal(ServingStatus.Serving, await Check(server, "helloworld.Greeter"));
    }

    [Theory]
    [InlineData(new string[0], "http://127.0.0.1:50052")]
    [InlineData(new[] { "http://127.0.0.1:0" }, "http://127.0.0.1:0")]
    [InlineData(new[] { "https://0.0.0.0:443", "http://0.0.0.0:9000" }, "http://0.0.0.0:9001")]
    [InlineData(new[] { "https://0.0.0.0:443" }, null)]
    public void The_web_listener_defaults_to_the_next_port_of_the_first_h2c_listener(string[] urls, string? expected)
    {
        Assert.Equal(expected is null ? [] : [expected], new ServeOptions { Urls = urls }.DefaultWebUrls());
    }

    [Fact]
    public async Task When_the_server_begins_to_stop_watchers_see_not_serving_and_checks_answer_not_serving()
    {
        await using var server = await Servers.Full();
        var health = new Health.HealthClient(server.Channel);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using var overall = health.Watch(new HealthCheckRequest { Service = "" }, cancellationToken: cts.Token);
        using var greeter = health.Watch(new HealthCheckRequest { Service = "helloworld.Greeter" }, cancellationToken: cts.Token);
        foreach (var watch in new[] { overall, greeter })
        {
            Assert.True(await watch.ResponseStream.MoveNext(cts.Token));
            Assert.Equal(ServingStatus.Serving, watch.ResponseStream.Current.Status);
        }

        // What Ctrl-C does first; the listeners stay open while calls drain.
        server.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();

        foreach (var watch in new[] { overall, greeter })
        {
            Assert.True(await watch.ResponseStream.MoveNext(cts.Token));
            Assert.Equal(ServingStatus.NotServing, watch.ResponseStream.Current.Status);
            Assert.False(await watch.ResponseStream.MoveNext(cts.Token)); // and the stream ends, OK
        }
        Assert.Equal(ServingStatus.NotServing, await Check(server, "helloworld.Greeter"));
        Assert.Equal(ServingStatus.NotServing, await Check(server, ""));
    }

    [Fact]
    public async Task Grpcio_checks_and_watches_the_health_service()
    {
        await using var server = await Servers.Full();
        var python = await ChildProcess.Run(Paths.Python, Paths.PythonScript("health_client.py"), "--server", server.Address.Replace("http://", ""),
            "", "log.v1.Log", "user.UserService", "no.such.Service");
        Assert.True(python.ExitCode == 0, python.Errors);
        Assert.Equal("""
            check '': SERVING
            check 'log.v1.Log': SERVING
            check 'user.UserService': SERVING
            check 'no.such.Service': NOT_FOUND
            watch '': SERVING
            watch 'no.such.Service': SERVICE_UNKNOWN

            """.ReplaceLineEndings("\n"), python.Output);
    }
}
