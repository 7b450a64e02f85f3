using System.Diagnostics;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Conduit.Protos.User.V1;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Xunit.Abstractions;
using static Conduit.Cluster.Tests.ClusterTests;
using Record = Conduit.Protos.Log.V1.Record;
using ServingStatus = Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus;

namespace Conduit.Cluster.Tests;

/// <summary>
/// Membership changes with real `conduit serve` processes and the `conduit cluster` commands: a
/// fourth node joins and serves the same records, a node leaves and stops taking part, a restart
/// keeps the changed membership (not --cluster-peers); per-node health; the storage gate.
/// </summary>
[Collection(ClusterTests.Processes)]
public sealed class MembershipTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly TempDir _dir = new("conduit-members-");
    private readonly List<Node> _nodes = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var node in _nodes) await node.DisposeAsync();
        _dir.Dispose();
    }

    private static async Task<ServingStatus> Health(GrpcChannel channel, string service) =>
        (await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest { Service = service }, Timeout())).Status;

    /// <summary>Waits until the node's log health is <paramref name="expected"/> (it changes on the node's own schedule: elections, retries).</summary>
    private static Task WaitForHealth(Node node, ServingStatus expected) => WaitForHealth(node.Channel, node.Id, expected);

    private static async Task WaitForHealth(GrpcChannel channel, string node, ServingStatus expected)
    {
        var deadline = Stopwatch.StartNew();
        while (await Health(channel, "log.v1.Log") != expected)
        {
            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(30), $"{node}: log.v1.Log health never became {expected}");
            await Task.Delay(100); // polling a status the node changes by itself (elections, storage retries); no event reaches a client
        }
    }

    private async Task<(int ExitCode, string Output, string Errors)> Cli(params string[] args)
    {
        var result = await ChildProcess.Run("dotnet", [Paths.ConduitDll, "cluster", .. args]);
        output.WriteLine($"conduit cluster {string.Join(' ', args)} -> {result.ExitCode}\n{result.Output}{result.Errors}");
        return result;
    }

    [Fact]
    public async Task A_node_joins_and_catches_up_a_node_leaves_and_a_restart_keeps_the_new_membership()
    {
        var clock = Stopwatch.StartNew();
        foreach (var id in new[] { "n1", "n2", "n3" }) _nodes.Add(new Node(id, Ports.Free(), Ports.Free(), Path.Combine(_dir.Path, id)));
        var peers = string.Join(',', _nodes.Select(n => $"{n.Id}=127.0.0.1:{n.RaftPort}"));
        await Task.WhenAll(_nodes.Select(n => n.Start(peers)));
        var leader = await WaitForLeader(_nodes, except: null);
        for (var i = 0; i < 10; i++) await leader.Client.ProduceAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8($"r{i}") } }, Timeout());

        // A new node started with --cluster-join is no member: not serving, and no leader of its own.
        var n4 = new Node("n4", Ports.Free(), Ports.Free(), Path.Combine(_dir.Path, "n4"));
        _nodes.Add(n4);
        await n4.Start(peers: null, join: true);
        Assert.Equal(ServingStatus.NotServing, await Health(n4.Channel, "log.v1.Log"));
        Assert.Equal(ServingStatus.Serving, await Health(n4.Channel, "user.v1.UserService"));
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: n4 up, joining");

        // `conduit cluster join` through the cluster's resolver reaches the leader, which sends n4 the log and commits it.
        var cluster = "conduit:///" + string.Join(',', _nodes.Take(3).Select(n => n.RpcAddress));
        var joined = await Cli("join", "--id", "n4", "--raft-address", $"127.0.0.1:{n4.RaftPort}", "--rpc-address", n4.RpcAddress, "--server", cluster);
        Assert.Equal(0, joined.ExitCode);
        Assert.Contains($"{"n4",-16} {n4.RpcAddress,-24}", joined.Output);
        AssertNoProgressStatus(joined.Output, 4);
        var reference = await ReadAll(leader, "", 10);
        Assert.Equal(reference, await ReadAll(n4, "", 10));
        for (var i = 10; i < 15; i++) Assert.Equal((ulong)i, (await leader.Client.ProduceAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8($"r{i}") } }, Timeout())).Offset);
        reference = await ReadAll(leader, "", 15);
        foreach (var node in _nodes) Assert.Equal(reference, await ReadAll(node, "", 15));
        await WaitForHealth(n4, ServingStatus.Serving);
        // n4 learns the others' ids and addresses from their metadata, once it reaches them.
        var seenByN4 = await WaitForServers(n4, ["n1", "n2", "n3", "n4"]);
        Assert.Equal(leader.Id, seenByN4.Single(s => s.IsLeader).Id);
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: n4 joined and caught up");

        // A second join of n4: ALREADY_EXISTS; a join sent to a follower: NOT_LEADER, as writes.
        var again = await Assert.ThrowsAsync<RpcException>(async () => await leader.Admin.AddServerAsync(
            new AddServerRequest { Id = "n4", RaftAddr = $"127.0.0.1:{n4.RaftPort}", RpcAddr = n4.RpcAddress }, Timeout()));
        Assert.Equal(StatusCode.AlreadyExists, again.StatusCode);
        Assert.Equal("MEMBER_EXISTS", again.GetDetail<ErrorInfo>()!.Reason);
        var follower = _nodes.First(n => n != leader && n != n4);
        var refused = await Assert.ThrowsAsync<RpcException>(async () => await follower.Admin.RemoveServerAsync(new RemoveServerRequest { Id = "n4" }, Timeout()));
        Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
        Assert.Equal("NOT_LEADER", refused.GetDetail<ErrorInfo>()!.Reason);

        // `conduit cluster leave` removes a follower: the others go on without it; it gets nothing more.
        var leaving = follower;
        var left = await Cli("leave", "--id", leaving.Id, "--server", cluster);
        Assert.Equal(0, left.ExitCode);
        Assert.DoesNotContain(leaving.Id + " ", left.Output);
        AssertNoProgressStatus(left.Output, 3);
        var remaining = _nodes.Where(n => n != leaving).ToList();
        Assert.Equal(remaining.Select(n => n.Id).Order(), (await leader.Client.GetServersAsync(new GetServersRequest(), Timeout())).Servers.Select(s => s.Id).Order());
        for (var i = 15; i < 20; i++) Assert.Equal((ulong)i, (await leader.Client.ProduceAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8($"r{i}") } }, Timeout())).Offset);
        reference = await ReadAll(leader, "", 20);
        foreach (var node in remaining) Assert.Equal(reference, await ReadAll(node, "", 20));
        // The removed node hears from no leader any more: not serving, and it holds none of the later records.
        await WaitForHealth(leaving, ServingStatus.NotServing);
        var missing = await Assert.ThrowsAsync<RpcException>(async () => await leaving.Client.ConsumeAsync(new ConsumeRequest { Offset = 15 }, Timeout()));
        Assert.Equal(StatusCode.OutOfRange, missing.StatusCode);
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: {leaving.Id} removed");

        // Every member killed and restarted with the old --cluster-peers (n4 with --cluster-join):
        // the committed membership rules: n1..n4 without the removed node, a leader, produce goes on.
        foreach (var node in remaining) node.Kill();
        await Task.WhenAll(remaining.Select(n => n == n4 ? n.Start(peers: null, join: true) : n.Start(peers)));
        var newLeader = await WaitForLeader(remaining, except: null);
        var servers = (await newLeader.Client.GetServersAsync(new GetServersRequest(), Timeout())).Servers;
        Assert.Equal(remaining.Select(n => n.Id).Order(), servers.Select(s => s.Id).Order());
        var next = await ProduceWithRetry(remaining, "r20");
        Assert.Equal(20UL, next.Offset);
        reference = await ReadAll(newLeader, "", 21);
        foreach (var node in remaining) Assert.Equal(reference, await ReadAll(node, "", 21));
        foreach (var node in remaining) await WaitForHealth(node, ServingStatus.Serving);
        var members = await Cli("members", "--server", n4.RpcAddress.Insert(0, "http://"));
        Assert.Equal(0, members.ExitCode);
        Assert.Contains($"{newLeader.Id,-16} {newLeader.RpcAddress,-24} leader", members.Output);
        Assert.DoesNotContain(leaving.Id + " ", members.Output);
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: restarted with the new membership");

        // The removed id joins again, a new node at new Raft and gRPC addresses: it is named by the
        // new ones only (the leader's names file has one entry for it), never the old gRPC address.
        leaving.Kill();
        var rejoiner = new Node(leaving.Id, Ports.Free(), Ports.Free(), Path.Combine(_dir.Path, leaving.Id + "-again"));
        _nodes.Add(rejoiner);
        await rejoiner.Start(peers: null, join: true);
        var rejoined = await Cli("join", "--id", rejoiner.Id, "--raft-address", $"127.0.0.1:{rejoiner.RaftPort}", "--rpc-address", rejoiner.RpcAddress, "--server", "conduit:///" + string.Join(',', remaining.Select(n => n.RpcAddress)));
        Assert.Equal(0, rejoined.ExitCode);
        Assert.Contains($"{rejoiner.Id,-16} {rejoiner.RpcAddress,-24}", rejoined.Output);
        var current = _nodes.Where(n => n != leaving).ToList();
        var seen = await WaitForServers(newLeader, [.. current.Select(n => n.Id).Order()]);
        Assert.Equal(rejoiner.RpcAddress, seen.Single(s => s.Id == rejoiner.Id).RpcAddr);
        var names = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(Path.Combine(newLeader.DataDir, "raft", "conduit-member-names.json"))).RootElement;
        var entry = Assert.Single(names.EnumerateArray(), e => e.GetProperty("Id").GetString() == rejoiner.Id);
        Assert.Equal(rejoiner.RpcAddress, entry.GetProperty("Rpc").GetString());
        Assert.Equal($"127.0.0.1:{rejoiner.RaftPort}", entry.GetProperty("Raft").GetString());
        var listed = await Cli("members", "--server", newLeader.RpcAddress.Insert(0, "http://"));
        Assert.Equal(0, listed.ExitCode);
        Assert.DoesNotContain(leaving.RpcAddress + " ", listed.Output);
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: {rejoiner.Id} joined again at new addresses");
    }

    /// <summary>AddServer's and RemoveServer's answers carry no progress: STATUS "-" on every row, not "unreachable".</summary>
    private static void AssertNoProgressStatus(string table, int members)
    {
        var rows = table.Split('\n', StringSplitOptions.RemoveEmptyEntries).Skip(1).ToList();
        Assert.Equal(members, rows.Count);
        Assert.All(rows, row => Assert.Equal("-", row.Split(' ', StringSplitOptions.RemoveEmptyEntries)[^1]));
    }

    [Fact]
    public async Task The_leader_leaves_and_the_others_elect_a_leader_and_go_on()
    {
        foreach (var id in new[] { "a", "b", "c" }) _nodes.Add(new Node(id, Ports.Free(), Ports.Free(), Path.Combine(_dir.Path, id)));
        var peers = string.Join(',', _nodes.Select(n => $"{n.Id}=127.0.0.1:{n.RaftPort}"));
        await Task.WhenAll(_nodes.Select(n => n.Start(peers)));
        var leader = await WaitForLeader(_nodes, except: null);
        Assert.Equal(0UL, (await leader.Client.ProduceAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8("r0") } }, Timeout())).Offset);

        var left = await Cli("leave", "--id", leader.Id, "--server", "conduit:///" + string.Join(',', _nodes.Select(n => n.RpcAddress)));
        Assert.Equal(0, left.ExitCode);
        Assert.DoesNotContain(leader.Id + " ", left.Output);
        var others = _nodes.Where(n => n != leader).ToList();
        var newLeader = await WaitForLeader(others, except: leader.Id);
        Assert.Equal(1UL, (await ProduceWithRetry(others, "r1")).Offset);
        // The others apply the membership without the old leader once the new leader commits in its term.
        foreach (var node in others) await WaitForServers(node, [.. others.Select(n => n.Id).Order()]);
        var reference = await ReadAll(newLeader, "", 2);
        foreach (var node in others) Assert.Equal(reference, await ReadAll(node, "", 2));
        // The old leader takes no part: not serving, and its writes are refused.
        await WaitForHealth(leader, ServingStatus.NotServing);
        var refused = await Assert.ThrowsAsync<RpcException>(async () => await leader.Client.ProduceAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8("no") } }, Timeout()));
        Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
    }

    [Fact]
    public async Task A_cluster_node_whose_log_folder_cannot_open_serves_the_other_services_and_the_log_comes_up_once_fixed()
    {
        // A file where the log's folder should be: the file engine cannot open it.
        var data = Path.Combine(_dir.Path, "solo");
        Directory.CreateDirectory(data);
        File.WriteAllText(Path.Combine(data, "log"), "not a folder");
        var rpcPort = Ports.Free();
        var environment = new Dictionary<string, string> { ["CONDUIT__HEALTH__STORAGERETRYINTERVAL"] = "00:00:00.200" };
        // No peers: a cluster of this one node (it elects itself once the log opens).
        await using var server = ChildProcess.Conduit(environment, "serve", "--urls", $"http://127.0.0.1:{rpcPort}", "--web-urls", "none", "--data", data,
            "--cluster-node-id", "solo", "--cluster-address", $"127.0.0.1:{Ports.Free()}", "--log-level", "Warning");
        await server.WaitForLine("listening on", TimeSpan.FromSeconds(60));
        using var channel = ConduitChannel.ForAddress($"http://127.0.0.1:{rpcPort}");
        var log = new Protos.Log.V1.Log.LogClient(channel);

        var down = await Assert.ThrowsAsync<RpcException>(async () => await log.ProduceAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8("x") } }, Timeout()));
        Assert.Equal(StatusCode.Unavailable, down.StatusCode);
        var info = down.GetDetail<ErrorInfo>()!;
        Assert.Equal(("STORAGE_UNAVAILABLE", "log-storage"), (info.Reason, info.Metadata["storage"]));
        Assert.DoesNotContain(data, down.Status.Detail);
        Assert.Equal(ServingStatus.NotServing, await Health(channel, "log.v1.Log"));
        Assert.Equal(ServingStatus.Serving, await Health(channel, "user.v1.UserService"));
        var missing = await Assert.ThrowsAsync<RpcException>(() => new UserService.UserServiceClient(channel).GetUserAsync(new GetUserRequest { Id = 1 }, Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, missing.StatusCode); // the users' service answers

        // The cause removed: the log and its Raft node come up without a restart.
        File.Delete(Path.Combine(data, "log"));
        await WaitForHealth(channel, "solo", ServingStatus.Serving);
        Assert.Equal(0UL, (await log.ProduceAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8("x") } }, Timeout())).Offset);
        var servers = (await log.GetServersAsync(new GetServersRequest(), Timeout())).Servers;
        Assert.Equal(("solo", true, "leader"), (servers.Single().Id, servers.Single().IsLeader, servers.Single().State));
    }
}
