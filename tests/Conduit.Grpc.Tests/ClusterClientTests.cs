using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Conduit.Grpc.Cluster;
using Conduit.Hosting;
using Conduit.Protos.Log.V1;
using Conduit.Storage.Log;
using Google.Protobuf;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;
using Grpc.Net.Client.Configuration;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;
using LogClient = Conduit.Protos.Log.V1.Log.LogClient;
using Record = Conduit.Protos.Log.V1.Record;

namespace Conduit.Grpc.Tests;

/// <summary>
/// The conduit:/// resolver and the conduit_leader picker against several in-process `conduit
/// serve`s whose GetServers lists them all, with a leader the test moves; a follower refuses
/// produces with UNAVAILABLE / NOT_LEADER as a Raft follower does.
/// </summary>
public sealed class ClusterClientTests(ITestOutputHelper output)
{
    private static readonly TimeSpan s_wait = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task ProducesReachOnlyTheLeaderAndConsumesSpreadEvenlyOverFollowers()
    {
        await using var cluster = await TestCluster.StartAsync(3, leader: 1);
        await cluster.SeedEveryNodeAsync(1);
        using var channel = cluster.Channel();
        var log = new LogClient(channel);
        await cluster.WarmUpAsync(log, 0, 2);

        for (var i = 0; i < 30; i++) await log.ProduceAsync(Produce($"r{i}"));
        Assert.Equal([0, 30, 0], cluster.Calls("/log.v1.Log/Produce"));

        const int consumes = 400;
        for (var i = 0; i < consumes; i++) Assert.Equal("seed0", (await log.ConsumeAsync(new ConsumeRequest { Offset = 0 })).Record.Value.ToStringUtf8());
        var spread = cluster.Calls("/log.v1.Log/Consume");
        output.WriteLine($"consumes per node: {string.Join(", ", spread)}");
        Assert.Equal(0, spread[1]);
        Assert.InRange(spread[0], consumes / 2 * 0.9, consumes / 2 * 1.1);
        Assert.InRange(spread[2], consumes / 2 * 0.9, consumes / 2 * 1.1);

        // The streaming kinds go the same ways.
        using (var produce = log.ProduceStream())
        {
            for (var i = 0; i < 3; i++)
            {
                await produce.RequestStream.WriteAsync(Produce($"s{i}"));
                Assert.True(await produce.ResponseStream.MoveNext(CancellationToken.None));
            }
            await produce.RequestStream.CompleteAsync();
        }
        Assert.Equal([0, 1, 0], cluster.Calls("/log.v1.Log/ProduceStream"));
        for (var i = 0; i < 4; i++)
        {
            using var consume = log.ConsumeStream(new ConsumeRequest { Offset = 0 });
            Assert.True(await consume.ResponseStream.MoveNext(CancellationToken.None));
        }
        Assert.Equal([2, 0, 2], cluster.Calls("/log.v1.Log/ConsumeStream"));

        // Topic changes go to the leader; reads that are neither go anywhere.
        await new LogAdmin.LogAdminClient(channel).CreateTopicAsync(new CreateTopicRequest { Name = "orders" });
        Assert.Equal([0, 1, 0], cluster.Calls("/log.v1.LogAdmin/CreateTopic"));
        Assert.Equal([.. cluster.Nodes.Select(n => n.Id)], ConduitCluster.Members(channel).Select(m => m.Id));
    }

    [Fact]
    public async Task AFollowersNotLeaderAnswerMakesTheNextProduceGoToTheNewLeader()
    {
        await using var cluster = await TestCluster.StartAsync(3, leader: 0);
        // Polling would not find the change within the test: only the NOT_LEADER answer can.
        using var channel = cluster.Channel(o => o.RefreshInterval = TimeSpan.FromMinutes(5));
        var log = new LogClient(channel);
        await log.ProduceAsync(Produce("before"));
        Assert.Equal([1, 0, 0], cluster.Calls("/log.v1.Log/Produce"));

        cluster.Membership.Leader = cluster.Nodes[2].Id;
        // The call already picked for the old leader fails, saying who leads now; Produce is not
        // retried blindly (it is not idempotent without a producer id).
        var refused = await Assert.ThrowsAsync<RpcException>(() => log.ProduceAsync(Produce("refused")).ResponseAsync);
        Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
        Assert.Equal(ConduitCluster.NotLeaderReason, refused.GetRpcStatus()?.GetDetail<Google.Rpc.ErrorInfo>()?.Reason);

        await Eventually(() => ConduitCluster.Members(channel).SingleOrDefault(m => m.IsLeader)?.Id == cluster.Nodes[2].Id);
        for (var i = 0; i < 10; i++) await log.ProduceAsync(Produce($"after{i}"));
        Assert.Equal([2, 0, 10], cluster.Calls("/log.v1.Log/Produce"));
        Assert.Equal(1, cluster.Nodes[0].Storage.Find("")!.NextOffset); // only "before" reached the old leader
        Assert.Equal(10, cluster.Nodes[2].Storage.Find("")!.NextOffset);
    }

    [Fact]
    public async Task WithTheNotLeaderRetryAProduceRidesOverALeaderChange()
    {
        await using var cluster = await TestCluster.StartAsync(3, leader: 0);
        using var channel = cluster.Channel(o => o.RefreshInterval = TimeSpan.FromMinutes(5));
        var log = new LogClient(channel.Intercept(new NotLeaderRetryInterceptor()));
        await log.ProduceAsync(Produce("before"));

        cluster.Membership.Leader = cluster.Nodes[1].Id;
        var offset = (await log.ProduceAsync(Produce("moved"), deadline: DateTime.UtcNow.AddSeconds(10))).Offset;
        Assert.Equal(0UL, offset);
        // Refused by the old leader (nothing appended there; once or twice, as the new member list
        // takes a moment), then taken by the new one, once.
        var calls = cluster.Calls("/log.v1.Log/Produce");
        Assert.Equal((1, 0), (calls[1], calls[2]));
        Assert.InRange(calls[0], 2, 4);
        Assert.Equal((1L, 1L), (cluster.Nodes[0].Storage.Find("")!.NextOffset, cluster.Nodes[1].Storage.Find("")!.NextOffset));

        // An election that ends while the call waits: the picker has no leader, then the new one.
        cluster.Membership.Leader = null;
        ConduitCluster.Refresh(channel);
        await Eventually(() => ConduitCluster.Members(channel).All(m => !m.IsLeader));
        var during = log.ProduceAsync(Produce("during"), deadline: DateTime.UtcNow.AddSeconds(10)).ResponseAsync;
        cluster.Membership.Leader = cluster.Nodes[2].Id;
        ConduitCluster.Refresh(channel);
        Assert.Equal(0UL, (await during).Offset);
        Assert.Equal(1L, cluster.Nodes[2].Storage.Find("")!.NextOffset);

        // With no leader at all, the retries give up and the caller sees the refusal.
        cluster.Membership.Leader = null;
        ConduitCluster.Refresh(channel);
        await Eventually(() => ConduitCluster.Members(channel).All(m => !m.IsLeader));
        var refused = await Assert.ThrowsAsync<RpcException>(() => log.ProduceAsync(Produce("nobody")).ResponseAsync);
        Assert.True(NotLeaderRetryInterceptor.IsNoLeader(refused), refused.Status.Detail);
    }

    [Fact]
    public async Task WhenTheLeaderDiesTheClientFindsTheNewOneWithoutWaitingForThePoll()
    {
        await using var cluster = await TestCluster.StartAsync(3, leader: 0);
        using var channel = cluster.Channel(o => o.RefreshInterval = TimeSpan.FromMinutes(5));
        var log = new LogClient(channel);
        await log.ProduceAsync(Produce("before"));

        await cluster.StopAsync(0);
        cluster.Membership.Leader = cluster.Nodes[2].Id; // as the election would
        // Calls picked before the client notices fail UNAVAILABLE (a Produce is not retried
        // blindly); the broken connection makes the resolver ask the others at once.
        var failures = 0;
        await Eventually(async () =>
        {
            try
            {
                await log.ProduceAsync(Produce("after"));
                return true;
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.Unavailable)
            {
                failures++;
                return false;
            }
        });
        output.WriteLine($"produces that failed before the new leader took them: {failures}");
        Assert.InRange(failures, 0, 5);
        for (var i = 0; i < 10; i++) await log.ProduceAsync(Produce($"more{i}"));
        Assert.Equal([0, 11], cluster.Calls("/log.v1.Log/Produce")[1..]);
        Assert.Equal(cluster.Nodes[2].Id, ConduitCluster.Members(channel).Single(m => m.IsLeader).Id);
    }

    [Fact]
    public async Task MembersThatJoinGetCallsAndMembersThatLeaveGetNoMore()
    {
        await using var cluster = await TestCluster.StartAsync(3, leader: 0, listed: 2);
        await cluster.SeedEveryNodeAsync(1);
        using var channel = cluster.Channel(o => o.RefreshInterval = TimeSpan.FromMinutes(5));
        var log = new LogClient(channel);
        await cluster.WarmUpAsync(log, 1);
        for (var i = 0; i < 20; i++) await log.ConsumeAsync(new ConsumeRequest());
        Assert.Equal([0, 20, 0], cluster.Calls("/log.v1.Log/Consume"));

        cluster.Membership.List(cluster.Nodes);
        ConduitCluster.Refresh(channel);
        await Eventually(() => ConduitCluster.Members(channel).Count == 3);
        // The new member's connection becomes ready a moment after the list names it.
        await Eventually(async () =>
        {
            await log.ConsumeAsync(new ConsumeRequest());
            return cluster.Calls("/log.v1.Log/Consume")[2] > 0;
        });

        cluster.Membership.List([cluster.Nodes[0], cluster.Nodes[2]]);
        ConduitCluster.Refresh(channel);
        await Eventually(() => ConduitCluster.Members(channel).Count == 2);
        cluster.ResetCalls();
        for (var i = 0; i < 20; i++) await log.ConsumeAsync(new ConsumeRequest());
        Assert.Equal([0, 0, 20], cluster.Calls("/log.v1.Log/Consume"));
    }

    [Fact]
    public async Task ADeadSeedIsSkippedAndADeadFollowerGetsNoCalls()
    {
        await using var cluster = await TestCluster.StartAsync(3, leader: 0);
        await cluster.SeedEveryNodeAsync(1);
        var dead = ClosedPort();
        // Consume is safe to repeat: a retry policy hides the call that meets the dying server.
        var retries = new ServiceConfig
        {
            MethodConfigs =
            {
                new MethodConfig
                {
                    Names = { new MethodName { Service = "log.v1.Log", Method = "Consume" } },
                    RetryPolicy = new RetryPolicy { MaxAttempts = 3, InitialBackoff = TimeSpan.FromMilliseconds(10), MaxBackoff = TimeSpan.FromMilliseconds(50), BackoffMultiplier = 2, RetryableStatusCodes = { StatusCode.Unavailable } },
                },
            },
        };
        using var channel = cluster.Channel(target: $"conduit:///127.0.0.1:{dead},127.0.0.1:{cluster.Nodes[2].Server.Port}", serviceConfig: retries);
        var log = new LogClient(channel);
        await cluster.WarmUpAsync(log, 1, 2);
        for (var i = 0; i < 20; i++) await log.ConsumeAsync(new ConsumeRequest());
        Assert.Equal(0, cluster.Calls("/log.v1.Log/Consume")[0]);

        await cluster.StopAsync(1);
        cluster.ResetCalls();
        for (var i = 0; i < 40; i++) await log.ConsumeAsync(new ConsumeRequest());
        var calls = cluster.Calls("/log.v1.Log/Consume");
        Assert.Equal(40, calls[2]);
        Assert.Equal(0, calls[0]);
        await log.ProduceAsync(Produce("still"));
        Assert.Equal(1, cluster.Calls("/log.v1.Log/Produce")[0]);
    }

    [Fact]
    public async Task WithNoLeaderAProduceFailsUnavailableAndAConsumeStillWorks()
    {
        await using var cluster = await TestCluster.StartAsync(2, leader: 0);
        await cluster.SeedEveryNodeAsync(1);
        cluster.Membership.Leader = null;
        using var channel = cluster.Channel();
        var log = new LogClient(channel);
        var failed = await Assert.ThrowsAsync<RpcException>(() => log.ProduceAsync(Produce("x")).ResponseAsync);
        Assert.Equal(StatusCode.Unavailable, failed.StatusCode);
        Assert.StartsWith(ConduitCluster.NoLeaderDetail, failed.Status.Detail, StringComparison.Ordinal);
        await log.ConsumeAsync(new ConsumeRequest());
        Assert.Equal([0, 0], cluster.Calls("/log.v1.Log/Produce"));
    }

    [Fact]
    public async Task ASingleNodeServesAConduitTargetWithItsOwnGetServers()
    {
        var data = new TempDir("conduit-cluster-");
        var options = new ServeOptions { DataDir = data.Path };
        var configuration = new ConfigurationBuilder().Build();
        await using var server = await InProcessServer.StartAsync(
            services => ConduitHost.AddConduitServices(services, configuration, options),
            ConduitHost.MapConduitServices, options, configuration, data: data);
        using var channel = ConduitChannel.ForAddress($"conduit:///127.0.0.1:{server.Port}");
        var log = new LogClient(channel);
        var offset = (await log.ProduceAsync(Produce("one"))).Offset;
        Assert.Equal("one", (await log.ConsumeAsync(new ConsumeRequest { Offset = offset })).Record.Value.ToStringUtf8());
        var member = Assert.Single(ConduitCluster.Members(channel));
        Assert.True(member.IsLeader);
        Assert.Equal($"127.0.0.1:{server.Port}", member.Address);
    }

    [Fact]
    public void TheGetServersCodecReadsWhatTheGeneratedTypesWrite()
    {
        var response = new GetServersResponse
        {
            Servers =
            {
                new Server { Id = "a", RpcAddr = "127.0.0.1:1", IsLeader = true },
                new Server { Id = "b", RpcAddr = "[::1]:2" },
            },
        };
        Assert.Equal([new ClusterMember("a", "127.0.0.1:1", true), new ClusterMember("b", "[::1]:2", false)], GetServersWire.Parse(response.ToByteArray()));
        Assert.True(ConduitResolver.TryParseAddress("[::1]:2", out var host, out var port));
        Assert.Equal(("::1", 2), (host, port));
        Assert.False(ConduitResolver.TryParseAddress("::1:2", out _, out _));
        Assert.Equal(["a:1", "b:50051"], ConduitResolver.ParseSeeds(new Uri("conduit:///a:1,b"), 50051));
    }

    private static ProduceRequest Produce(string value) => new() { Record = new Record { Value = ByteString.CopyFromUtf8(value) } };

    private static int ClosedPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static Task Eventually(Func<bool> condition) => Eventually(() => Task.FromResult(condition()));

    /// <summary>Waits for a condition the client reaches on its own (a resolve, a connection), checking every 20 ms, at most 10 s.</summary>
    private static async Task Eventually(Func<Task<bool>> condition)
    {
        var until = DateTime.UtcNow + s_wait;
        while (!await condition())
        {
            if (DateTime.UtcNow > until) Assert.Fail("the client did not get there within " + s_wait);
            await Task.Delay(20); // the client's resolver and balancer change state on their own; they raise nothing a test can await
        }
    }
}

/// <summary>The member list every test node's GetServers answers, and who leads.</summary>
internal sealed class Membership : ILogServers
{
    private readonly Lock _lock = new();
    private IReadOnlyList<TestNode> _listed = [];

    public string? Leader { get; set; }

    public void List(IReadOnlyList<TestNode> nodes)
    {
        lock (_lock) _listed = [.. nodes];
    }

    public IReadOnlyList<LogServer> Servers()
    {
        lock (_lock) return [.. _listed.Select(n => new LogServer(n.Id, $"127.0.0.1:{n.Server.Port}", n.Id == Leader))];
    }

    public bool IsLeader(string id) => id == Leader;
}

/// <summary>Counts each node's calls by method, and refuses produces and topic changes on a follower as a Raft follower does.</summary>
internal sealed class NodeProbe(Membership membership) : Interceptor
{
    public const string DirectHeader = "x-test-direct";

    public string Id { get; set; } = "";

    public ConcurrentDictionary<string, int> Calls { get; } = new();

    private void Check(ServerCallContext context)
    {
        if (context.RequestHeaders.Get(DirectHeader) is not null) return;
        Calls.AddOrUpdate(context.Method, 1, (_, n) => n + 1);
        if (context.Method is "/log.v1.Log/Produce" or "/log.v1.Log/ProduceStream" or "/log.v1.Log/ProduceBatch" or "/log.v1.LogAdmin/CreateTopic" && !membership.IsLeader(Id))
        {
            var leader = membership.Servers().FirstOrDefault(s => s.IsLeader);
            throw RpcException.WithDetails(StatusCode.Unavailable, $"{Id} is not the leader",
                Details.ErrorInfo(ConduitCluster.NotLeaderReason, "log.conduit.dev", new Dictionary<string, string> { ["leader_id"] = leader.Id ?? "", ["leader_addr"] = leader.RpcAddress ?? "" }));
        }
    }

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        Check(context);
        return continuation(request, context);
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Check(context);
        return continuation(request, responseStream, context);
    }

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Check(context);
        return continuation(requestStream, context);
    }

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Check(context);
        return continuation(requestStream, responseStream, context);
    }
}

internal sealed record TestNode(string Id, InProcessServer Server, NodeProbe Probe)
{
    public ILogStorage Storage => Server.Services.GetRequiredService<ILogStorage>();
}

/// <summary>Several in-process `conduit serve`s sharing one <see cref="Membership"/>.</summary>
internal sealed class TestCluster : IAsyncDisposable
{
    private TestCluster(Membership membership, IReadOnlyList<TestNode> nodes)
    {
        Membership = membership;
        Nodes = nodes;
    }

    public Membership Membership { get; }

    public IReadOnlyList<TestNode> Nodes { get; }

    /// <param name="listed">How many of the nodes (the first ones) GetServers lists at first; all by default.</param>
    public static async Task<TestCluster> StartAsync(int count, int leader, int? listed = null)
    {
        var membership = new Membership();
        var nodes = new List<TestNode>();
        try
        {
            for (var i = 0; i < count; i++)
            {
                var probe = new NodeProbe(membership) { Id = $"node{i}" };
                var data = new TempDir("conduit-cluster-");
                var options = new ServeOptions { DataDir = data.Path };
                var configuration = new ConfigurationBuilder().Build();
                var server = await InProcessServer.StartAsync(
                    services =>
                    {
                        ConduitHost.AddConduitServices(services, configuration, options);
                        services.AddSingleton<ILogServers>(membership);
                        services.AddSingleton(probe);
                        services.Configure<GrpcServiceOptions>(o => o.Interceptors.Add<NodeProbe>());
                    },
                    ConduitHost.MapConduitServices, options, configuration, data: data);
                nodes.Add(new TestNode(probe.Id, server, probe));
            }
        }
        catch
        {
            foreach (var node in nodes) await node.Server.DisposeAsync();
            throw;
        }
        membership.List(nodes.Take(listed ?? count).ToList());
        membership.Leader = nodes[leader].Id;
        return new TestCluster(membership, nodes);
    }

    /// <summary>A conduit:/// channel to every node (or to <paramref name="target"/>).</summary>
    public GrpcChannel Channel(Action<ConduitClusterOptions>? settings = null, string? target = null, ServiceConfig? serviceConfig = null)
    {
        target ??= "conduit:///" + string.Join(",", Nodes.Select(n => $"127.0.0.1:{n.Server.Port}"));
        return ConduitChannel.ForAddress(target, o =>
        {
            o.ServiceProvider = new ServiceCollection().AddConduitCluster(settings).BuildServiceProvider();
            o.ServiceConfig = serviceConfig;
        });
    }

    /// <summary>Writes the same records to every node's default topic, past the probe (as replication would).</summary>
    public async Task SeedEveryNodeAsync(int records)
    {
        var direct = new Metadata { { NodeProbe.DirectHeader, "1" } };
        foreach (var node in Nodes)
        {
            var log = new LogClient(node.Server.Channel);
            for (var i = 0; i < records; i++)
            {
                await log.ProduceAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8($"seed{i}") } }, direct);
            }
        }
    }

    /// <summary>
    /// Consumes until each of <paramref name="followers"/> has had one (so their connections are
    /// ready, and what a test counts next is the picker's choice), then forgets the counts.
    /// </summary>
    public async Task WarmUpAsync(LogClient log, params int[] followers)
    {
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (followers.Any(f => Calls("/log.v1.Log/Consume")[f] == 0))
        {
            if (DateTime.UtcNow > until) Assert.Fail("the followers' connections did not become ready within 10 s");
            await log.ConsumeAsync(new ConsumeRequest());
        }
        ResetCalls();
    }

    private readonly HashSet<int> _stopped = [];

    /// <summary>Stops node <paramref name="index"/> (it stays listed).</summary>
    public async Task StopAsync(int index)
    {
        _stopped.Add(index);
        await Nodes[index].Server.DisposeAsync();
    }

    /// <summary>Each node's count of calls to <paramref name="method"/>, in node order.</summary>
    public int[] Calls(string method) => [.. Nodes.Select(n => n.Probe.Calls.GetValueOrDefault(method))];

    public void ResetCalls()
    {
        foreach (var node in Nodes) node.Probe.Calls.Clear();
    }

    public async ValueTask DisposeAsync()
    {
        for (var i = 0; i < Nodes.Count; i++)
        {
            if (!_stopped.Contains(i)) await Nodes[i].Server.DisposeAsync();
        }
    }
}
