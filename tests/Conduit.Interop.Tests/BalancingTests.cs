using System.Diagnostics;
using Conduit.Grpc;
using Conduit.Protos.HelloWorld;
using Conduit.Protos.Log.V1;
using Grpc.Core;
using Grpc.Net.Client;

namespace Conduit.Interop.Tests;

/// <summary>
/// Client-side balancing (docs/client.md) against three real `conduit serve` processes, each with
/// its own port and data folder: targets, round_robin, health checking, a killed and a restarted server.
/// </summary>
public class BalancingTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);

    private static string List(ServeProcesses servers) => "static:///" + string.Join(',', servers.Addresses);

    private static GrpcChannel RoundRobin(string target, string? healthService = null, Action<GrpcChannelOptions>? configure = null)
    {
        var config = ConduitServiceConfig.Parse($$"""
            { "loadBalancingConfig": [ { "round_robin": {} } ]{{(healthService is null ? "" : $$""", "healthCheckConfig": { "serviceName": "{{healthService}}" }""")}} }
            """);
        // The default retry policy of reads, as Conduit's default config has it.
        foreach (var method in ConduitServiceConfig.Default().Config.MethodConfigs) config.Config.MethodConfigs.Add(method);
        return ConduitChannel.ForAddress(target, configure, tls: null, config);
    }

    private static async Task<long[]> Calls(ServeProcesses servers) =>
        await Task.WhenAll(Enumerable.Range(0, servers.Ports.Length).Select(servers.Calls));

    [Fact]
    public async Task Every_target_form_reaches_the_servers_through_conduit_hello()
    {
        await using var servers = await ServeProcesses.Launch(3);
        var (a, b, c) = (servers.Ports[0], servers.Ports[1], servers.Ports[2]);
        string[] targets =
        [
            $"127.0.0.1:{a}",
            $"http://127.0.0.1:{b}",
            $"http://127.0.0.1:{a},127.0.0.1:{b}", // the issue's own: no stack trace
            $"static:///127.0.0.1:{a},127.0.0.1:{b},127.0.0.1:{c}",
            $"dns:///localhost:{c}",
        ];
        foreach (var target in targets)
        {
            // As the README's "Several servers" does, with round_robin and without (pick_first).
            foreach (var lb in new[] { new[] { "--lb", "round_robin" }, [] })
            {
                var run = await ChildProcess.Run("dotnet", [Paths.ConduitDll, "hello", "World", "--server", target, .. lb]);
                Assert.True(run.ExitCode == 0, $"{target}: {run.Errors}");
                Assert.Equal("Hello World\n", run.Output);
            }
        }
        var bad = await ChildProcess.Run("dotnet", Paths.ConduitDll, "hello", "you", "--server", "nowhere:///x");
        Assert.Equal(2, bad.ExitCode);
        Assert.StartsWith("error: ", bad.Errors);
        Assert.Contains("no resolver for the scheme 'nowhere'", bad.Errors);
        Assert.DoesNotContain("   at ", bad.Errors);
    }

    [Fact]
    public async Task Round_robin_spreads_calls_within_ten_percent_of_even()
    {
        await using var servers = await ServeProcesses.Launch(3);
        using var channel = RoundRobin(List(servers));
        var greeter = new Greeter.GreeterClient(ConduitChannel.CreateCallInvoker(channel));
        // Wait until every server is connected and has said SERVING, then count from there.
        await greeter.SayHelloAsync(new HelloRequest { Name = "warm" }, new CallOptions(deadline: DateTime.UtcNow + Deadline).WithWaitForReady());
        await WaitFor(async () => (await Calls(servers)).All(n => n > 0) || await Warm(greeter), TimeSpan.FromSeconds(20));
        var before = await Calls(servers);
        const int calls = 300;
        for (var i = 0; i < calls; i++) await greeter.SayHelloAsync(new HelloRequest { Name = "n" }, deadline: DateTime.UtcNow + Deadline);
        var after = await Calls(servers);
        var took = after.Zip(before, (x, y) => x - y).ToArray();
        Assert.Equal(calls, took.Sum());
        foreach (var n in took) Assert.InRange(n, 90, 110); // even is 100
    }

    /// <summary>One more call, false: WaitFor's way to keep calling until every server has taken one.</summary>
    private static async Task<bool> Warm(Greeter.GreeterClient greeter)
    {
        await greeter.SayHelloAsync(new HelloRequest { Name = "warm" }, deadline: DateTime.UtcNow + Deadline);
        return false;
    }

    [Fact]
    public async Task Killing_a_server_loses_no_call_of_an_idempotent_method()
    {
        await using var servers = await ServeProcesses.Launch(3);
        var backoff = TimeSpan.FromSeconds(1);
        using var channel = RoundRobin(List(servers), configure: o =>
        {
            o.InitialReconnectBackoff = TimeSpan.FromMilliseconds(200);
            o.MaxReconnectBackoff = backoff;
        });
        var greeter = new Greeter.GreeterClient(ConduitChannel.CreateCallInvoker(channel));
        var ok = 0;
        var failures = new List<string>();
        using var stop = new CancellationTokenSource();
        var caller = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    // Not wait-for-ready: a call that finds no server is a failure the test sees.
                    await greeter.SayHelloAsync(new HelloRequest { Name = "n" }, deadline: DateTime.UtcNow + Deadline);
                    Interlocked.Increment(ref ok);
                }
                catch (RpcException ex)
                {
                    lock (failures) failures.Add(ex.Status.ToString());
                }
            }
        });
        await WaitFor(() => Task.FromResult(Volatile.Read(ref ok) >= 100), Deadline);
        await servers.Kill(1);
        var atKill = Volatile.Read(ref ok);
        await WaitFor(() => Task.FromResult(Volatile.Read(ref ok) >= atKill + 300), Deadline);

        await stop.CancelAsync();
        await caller;
        Assert.Empty(failures);
    }

    [Fact]
    public async Task A_restarted_server_gets_calls_again_within_the_reconnect_backoff()
    {
        await using var servers = await ServeProcesses.Launch(3);
        var maxBackoff = TimeSpan.FromSeconds(1);
        using var channel = RoundRobin(List(servers), configure: o =>
        {
            o.InitialReconnectBackoff = TimeSpan.FromMilliseconds(200);
            o.MaxReconnectBackoff = maxBackoff;
        });
        // Counted on the client: a single server's GetServers names the address it was reached by,
        // which is the server round_robin picked for the call.
        var log = new Log.LogClient(ConduitChannel.CreateCallInvoker(channel));
        var answered = new Dictionary<string, TimeSpan>(); // address: when it last answered
        var clock = Stopwatch.StartNew();
        using var stop = new CancellationTokenSource();
        var caller = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    var reply = await log.GetServersAsync(new GetServersRequest(), deadline: DateTime.UtcNow + TimeSpan.FromSeconds(2));
                    var address = reply.Servers.Single().RpcAddr;
                    lock (answered) answered[address] = clock.Elapsed;
                }
                catch (RpcException)
                {
                    // GetServers is not retried by the default config: a call to the dying server may fail.
                }
                await Task.Delay(5); // paces the calls made while a server dies; not a synchronisation
            }
        });
        TimeSpan? LastFrom(string address)
        {
            lock (answered) return answered.TryGetValue(address, out var at) ? at : null;
        }
        var restarted = servers.Addresses.ElementAt(1);
        await WaitFor(() => Task.FromResult(servers.Addresses.All(a => LastFrom(a) is not null)), Deadline);

        await servers.Kill(1);
        // Long enough for the channel's reconnect attempts to back off to their maximum (and, before
        // the health channels shared the channel's backoff, for theirs to grow past it: 8 s down
        // made the first call come 5 s after the restart).
        await Task.Delay(maxBackoff * 8);
        var back = clock.Elapsed;
        await servers.Start(1); // on its old port and data folder; returns once it listens
        var listening = clock.Elapsed;
        await WaitFor(() => Task.FromResult(LastFrom(restarted) > back), Deadline);
        var first = LastFrom(restarted)!.Value;
        await stop.CancelAsync();
        await caller;
        // One reconnect backoff (±20% jitter), then the health Watch (opened again 0.5 s after it
        // broke; conduit serve may answer SERVICE_UNKNOWN at first) and a loaded machine's slack.
        var bound = maxBackoff * 1.2 + TimeSpan.FromSeconds(2.5);
        Assert.True(first - listening < bound, $"the restarted server took its first call {(first - listening).TotalSeconds:F2} s after it listened (bound {bound.TotalSeconds:F1} s)");
    }

    [Fact]
    public async Task Round_robin_skips_a_server_whose_health_is_NOT_SERVING()
    {
        await using var servers = await ServeProcesses.Launch(3);
        // Server 2's cache reaches an Accounts service that is not there: its cache.v1.Cache health is NOT_SERVING.
        await servers.Kill(2);
        servers.Environments[2]["CONDUIT__CACHE__ACCOUNTSURL"] = $"http://127.0.0.1:{Ports.Free()}";
        servers.Environments[2]["CONDUIT__HEALTH__CHECKINTERVAL"] = "00:00:01";
        await servers.Start(2);
        using var channel = RoundRobin(List(servers), healthService: "cache.v1.Cache");
        var greeter = new Greeter.GreeterClient(ConduitChannel.CreateCallInvoker(channel));
        await greeter.SayHelloAsync(new HelloRequest { Name = "first" }, new CallOptions(deadline: DateTime.UtcNow + Deadline).WithWaitForReady());
        // Until both healthy servers have said SERVING (a loaded server takes a moment) and take calls.
        await WaitFor(async () => (await Calls(servers)).Take(2).All(n => n > 0) || await Warm(greeter), Deadline);
        var before = await Calls(servers);
        for (var i = 0; i < 60; i++) await greeter.SayHelloAsync(new HelloRequest { Name = "n" }, deadline: DateTime.UtcNow + Deadline);
        var took = (await Calls(servers)).Zip(before, (x, y) => x - y).ToArray();
        Assert.Equal(0, took[2]);
        Assert.Equal(60, took[0] + took[1]);
        Assert.True(took[0] > 0 && took[1] > 0, string.Join(", ", took));
    }

    private static async Task WaitFor(Func<Task<bool>> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException("condition not met in " + timeout);
            await Task.Delay(20); // servers in other processes and the channel's picker signal nothing to the test
        }
    }
}
