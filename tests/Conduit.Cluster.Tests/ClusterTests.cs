using System.Diagnostics;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using Grpc.Net.Client;
using Xunit.Abstractions;
using Record = Conduit.Protos.Log.V1.Record;

namespace Conduit.Cluster.Tests;

/// <summary>
/// Three real `conduit serve` processes on 127.0.0.1 replicating the log with Raft: produce
/// through the leader, identical records on every node, kill -9 of the leader, a new leader,
/// produce goes on, the old leader restarts and catches up, a node with a wiped folder rejoins.
/// </summary>
[Collection(Processes)]
public sealed partial class ClusterTests(ITestOutputHelper output) : IAsyncLifetime
{
    /// <summary>The classes that start several nodes run one after another: on a loaded 2-core machine, side by side, their elections time out.</summary>
    public const string Processes = "clusters of real processes";

    private readonly TempDir _dir = new("conduit-cluster-");
    private readonly List<Node> _nodes = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var node in _nodes) await node.DisposeAsync();
        _dir.Dispose();
    }

    internal static CallOptions Timeout(double seconds = 10) => new CallOptions().WithTimeout(TimeSpan.FromSeconds(seconds));

    [Fact]
    public async Task Three_nodes_replicate_fail_over_and_catch_up()
    {
        var clock = Stopwatch.StartNew();
        foreach (var id in new[] { "n1", "n2", "n3" }) _nodes.Add(new Node(id, Ports.Free(), Ports.Free(), Path.Combine(_dir.Path, id)));
        var peers = string.Join(',', _nodes.Select(n => $"{n.Id}=127.0.0.1:{n.RaftPort}"));
        await Task.WhenAll(_nodes.Select(n => n.Start(peers)));

        // GetServers on any node names every member with its gRPC address, and one leader.
        var leader = await WaitForLeader(_nodes, except: null);
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: leader {leader.Id}");
        var servers = (await _nodes[0].Client.GetServersAsync(new GetServersRequest(), Timeout())).Servers;
        Assert.Equal(["n1", "n2", "n3"], servers.Select(s => s.Id).Order());
        Assert.All(_nodes, n => Assert.Equal($"127.0.0.1:{n.RpcPort}", servers.Single(s => s.Id == n.Id).RpcAddr));

        // `conduit cluster members` prints the same list (once n2 has reached the others and knows their addresses).
        await WaitForServers(_nodes[1], ["n1", "n2", "n3"]);
        var members = await ChildProcess.Run("dotnet", Paths.ConduitDll, "cluster", "members", "--server", $"http://127.0.0.1:{_nodes[1].RpcPort}");
        Assert.Equal(0, members.ExitCode);
        Assert.Contains($"{leader.Id,-16} {$"127.0.0.1:{leader.RpcPort}",-24} leader", members.Output);
        // The others as n2 sees them: followers, or "unknown" before n2's first contact with them (each second).
        Assert.Equal(2, members.Output.Split('\n').Count(l => l.Contains(" follower ", StringComparison.Ordinal) || l.Contains(" unknown ", StringComparison.Ordinal)));

        // Produce through the leader: single records with key and headers, and a batch.
        var produced = new List<(ulong Offset, Record Record)>();
        for (var i = 0; i < 20; i++)
        {
            var record = new Record { Value = ByteString.CopyFromUtf8($"r{i}"), Key = ByteString.CopyFromUtf8($"k{i % 3}") };
            record.Headers["h"] = ByteString.CopyFromUtf8($"v{i}");
            var response = await leader.Client.ProduceAsync(new ProduceRequest { Record = record }, Timeout());
            produced.Add((response.Offset, record));
        }
        var batch = new ProduceBatchRequest { Topic = "orders" };
        for (var i = 0; i < 10; i++) batch.Records.Add(new Record { Value = ByteString.CopyFromUtf8($"o{i}") });
        var batchResponse = await leader.Client.ProduceBatchAsync(batch, Timeout());
        Assert.Equal(Enumerable.Range(0, 20).Select(i => (ulong)i), produced.Select(p => p.Offset));
        Assert.Equal(0UL, batchResponse.BaseOffset);

        // Every node serves the same records (followers from what they applied).
        var reference = await ReadAll(leader, "", 20);
        foreach (var node in _nodes) Assert.Equal(reference, await ReadAll(node, "", 20));
        foreach (var node in _nodes) Assert.Equal(10, (await ReadAll(node, "orders", 10)).Count);
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal(produced[i].Record.Value, reference[i].Value);
            Assert.Equal(produced[i].Record.Key, reference[i].Key);
            Assert.Equal(produced[i].Record.Headers["h"], reference[i].Headers["h"]);
            Assert.True(reference[i].TimestampUnixMs > 0);
        }

        // A write to a follower: UNAVAILABLE, NOT_LEADER, naming the leader and its address.
        var follower = _nodes.First(n => n != leader);
        var refused = await Assert.ThrowsAsync<RpcException>(async () =>
            await follower.Client.ProduceAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8("no") } }, Timeout()));
        Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
        var info = refused.GetDetail<ErrorInfo>()!;
        Assert.Equal("NOT_LEADER", info.Reason);
        Assert.Equal(leader.Id, info.Metadata["leader_id"]);
        Assert.Equal($"127.0.0.1:{leader.RpcPort}", info.Metadata["leader_rpc_addr"]);
        var refusedAdmin = await Assert.ThrowsAsync<RpcException>(async () =>
            await follower.Admin.CreateTopicAsync(new CreateTopicRequest { Name = "nope" }, Timeout()));
        Assert.Equal("NOT_LEADER", refusedAdmin.GetDetail<ErrorInfo>()!.Reason);

        // kill -9 the leader: the other two elect a new one and produce goes on there.
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: killing {leader.Id}");
        leader.Kill();
        var survivors = _nodes.Where(n => n != leader).ToList();
        var newLeader = await WaitForLeader(survivors, except: leader.Id);
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: new leader {newLeader.Id}");
        for (var i = 20; i < 30; i++)
        {
            var response = await ProduceWithRetry(survivors, $"r{i}");
            Assert.Equal((ulong)i, response.Offset);
        }

        // The old leader restarts on its folder, rejoins as a follower and catches up.
        await leader.Start(peers);
        var all = await ReadAll(newLeader, "", 30);
        foreach (var node in _nodes) Assert.Equal(all, await ReadAll(node, "", 30));
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: {leader.Id} caught up");

        // A follower whose data folder is wiped rejoins as a new node and gets everything again.
        var wiped = _nodes.First(n => n != newLeader && n != leader);
        wiped.Kill();
        Directory.Delete(wiped.DataDir, recursive: true);
        await wiped.Start(peers);
        Assert.Equal(all, await ReadAll(wiped, "", 30));
        Assert.Equal(await ReadAll(newLeader, "orders", 10), await ReadAll(wiped, "orders", 10));
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: wiped {wiped.Id} caught up");
    }

    [Fact]
    public async Task Without_a_majority_there_is_no_leader_and_writes_answer_unavailable_with_retry_info()
    {
        // One node of three started alone: it can never win an election.
        var node = new Node("solo", Ports.Free(), Ports.Free(), Path.Combine(_dir.Path, "solo"));
        _nodes.Add(node);
        await node.Start($"solo=127.0.0.1:{node.RaftPort},b=127.0.0.1:{Ports.Free()},c=127.0.0.1:{Ports.Free()}");
        var refused = await Assert.ThrowsAsync<RpcException>(async () =>
            await node.Client.ProduceAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8("x") } }, Timeout()));
        Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
        Assert.Equal("NO_LEADER", refused.GetDetail<ErrorInfo>()!.Reason);
        Assert.NotNull(refused.GetDetail<RetryInfo>());
        var servers = (await node.Client.GetServersAsync(new GetServersRequest(), Timeout())).Servers;
        Assert.Equal(["b", "c", "solo"], servers.Select(s => s.Id).Order());
        Assert.DoesNotContain(servers, s => s.IsLeader);
        Assert.Equal($"127.0.0.1:{node.RpcPort}", servers.Single(s => s.Id == "solo").RpcAddr);
        // Its own state says it knows no leader, and its log's health is NOT_SERVING (a balancer sends clients elsewhere).
        Assert.Equal("no-leader", servers.Single(s => s.Id == "solo").State);
        Assert.All(servers.Where(s => s.Id != "solo"), s => Assert.Contains(s.State, new[] { "unreachable", "unknown" }));
        var health = await new global::Grpc.Health.V1.Health.HealthClient(node.Channel).CheckAsync(new global::Grpc.Health.V1.HealthCheckRequest { Service = "log.v1.Log" }, Timeout());
        Assert.Equal(global::Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.NotServing, health.Status);
        // Reads are served from the node's own (empty) log.
        var empty = await Assert.ThrowsAsync<RpcException>(async () => await node.Client.ConsumeAsync(new ConsumeRequest { Offset = 0 }, Timeout()));
        Assert.Equal(StatusCode.OutOfRange, empty.StatusCode);
    }

    [Fact]
    public async Task InitProducer_epochs_are_replicated_so_a_new_leader_never_hands_one_out_twice_and_fencing_starts_at_once()
    {
        foreach (var id in new[] { "n1", "n2", "n3" }) _nodes.Add(new Node(id, Ports.Free(), Ports.Free(), Path.Combine(_dir.Path, id)));
        var peers = string.Join(',', _nodes.Select(n => $"{n.Id}=127.0.0.1:{n.RaftPort}"));
        await Task.WhenAll(_nodes.Select(n => n.Start(peers)));
        var leader = await WaitForLeader(_nodes, except: null);
        ProduceRequest Produced(ulong id, uint epoch, ulong sequence) =>
            new() { Topic = "p", ProducerId = id, ProducerEpoch = epoch, Sequence = sequence, Record = new Record { Value = ByteString.CopyFromUtf8($"{epoch}-{sequence}") } };

        var first = await leader.Client.InitProducerAsync(new InitProducerRequest { Topic = "p" }, Timeout());
        var producerId = first.ProducerId;
        Assert.Equal(0U, first.ProducerEpoch);
        Assert.Equal(0UL, (await leader.Client.ProduceAsync(Produced(producerId, 0, 0), Timeout())).Offset);
        // A second instance asks for an epoch: the first is fenced at once, before the second writes.
        var second = await leader.Client.InitProducerAsync(new InitProducerRequest { Topic = "p", ProducerId = producerId }, Timeout());
        Assert.Equal(1U, second.ProducerEpoch);
        var fenced = await Assert.ThrowsAsync<RpcException>(async () => await leader.Client.ProduceAsync(Produced(producerId, 0, 1), Timeout()));
        Assert.Equal("PRODUCER_FENCED", fenced.GetDetail<ErrorInfo>()!.Reason);

        // The leader dies before epoch 1 wrote anything: the new leader knows epoch 1 from the
        // replicated entry, hands out 2 (never 1 again), and still fences epoch 0.
        leader.Kill();
        var survivors = _nodes.Where(n => n != leader).ToList();
        var newLeader = await WaitForLeader(survivors, except: leader.Id);
        InitProducerResponse third = null!;
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                third = await newLeader.Client.InitProducerAsync(new InitProducerRequest { Topic = "p", ProducerId = producerId }, Timeout());
                break;
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.Unavailable && deadline.Elapsed < TimeSpan.FromSeconds(30))
            {
                await Task.Delay(100); // the new leader's first entry of its term is not committed yet
            }
        }
        Assert.Equal(2U, third.ProducerEpoch);
        foreach (var (epoch, sequence) in new[] { (0U, 1UL), (1U, 0UL) })
        {
            var refused = await Assert.ThrowsAsync<RpcException>(async () => await newLeader.Client.ProduceAsync(Produced(producerId, epoch, sequence), Timeout()));
            Assert.Equal("PRODUCER_FENCED", refused.GetDetail<ErrorInfo>()!.Reason);
        }
        Assert.Equal(1UL, (await newLeader.Client.ProduceAsync(Produced(producerId, 2, 0), Timeout())).Offset);
    }

    [Fact]
    public async Task A_topic_change_that_times_out_waiting_for_its_commit_answers_outcome_unknown_without_retry_advice()
    {
        // A 1 ms wait cannot see a Raft commit: the change is proposed, the answer cannot know
        // whether it will be applied, and says so (it is, a moment later).
        foreach (var id in new[] { "n1", "n2", "n3" })
        {
            var node = new Node(id, Ports.Free(), Ports.Free(), Path.Combine(_dir.Path, id));
            node.Environment["CONDUIT__CLUSTER__ADMINTIMEOUTMS"] = "1";
            _nodes.Add(node);
        }
        var peers = string.Join(',', _nodes.Select(n => $"{n.Id}=127.0.0.1:{n.RaftPort}"));
        await Task.WhenAll(_nodes.Select(n => n.Start(peers)));
        var leader = await WaitForLeader(_nodes, except: null);
        await ProduceWithRetry([leader], "warm-up");
        // On a starved thread pool the commit can beat even a 1 ms timer: then the answer is a
        // plain success, which is honest too. Every answer is one of the two, and one is unknown.
        RpcException? unknown = null;
        var name = "";
        for (var i = 0; i < 20 && unknown is null; i++)
        {
            name = $"maybe-{i}";
            try
            {
                await leader.Admin.CreateTopicAsync(new CreateTopicRequest { Name = name }, Timeout());
            }
            catch (RpcException ex)
            {
                unknown = ex;
            }
        }
        Assert.NotNull(unknown);
        Assert.Equal(StatusCode.DeadlineExceeded, unknown.StatusCode);
        Assert.Equal("OUTCOME_UNKNOWN", unknown.GetDetail<ErrorInfo>()!.Reason);
        Assert.Null(unknown.GetDetail<RetryInfo>());
        var deadline = Stopwatch.StartNew();
        while (!(await leader.Admin.ListTopicsAsync(new ListTopicsRequest(), Timeout())).Topics.Any(t => t.Name == name))
        {
            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(20), "the topic was not created after all");
            await Task.Delay(50); // the commit that the answer could not wait for
        }

        // The CLI says the outcome is unknown (a truncation, the same path).
        var said = false;
        for (var i = 0; i < 10 && !said; i++)
        {
            var cli = await ChildProcess.Run("dotnet", Paths.ConduitDll, "log", "truncate", "--server", $"http://127.0.0.1:{leader.RpcPort}", "--topic", "", "--before", "1");
            if (cli.ExitCode == 0) continue; // committed within the wait
            Assert.Equal(1, cli.ExitCode);
            Assert.Contains("DeadlineExceeded", cli.Errors, StringComparison.Ordinal);
            Assert.Contains("may or may not have been applied", cli.Errors, StringComparison.Ordinal);
            said = true;
        }
        Assert.True(said, "no truncation timed out in 10 tries");
    }

    /// <summary>Produces to whichever node leads, following NOT_LEADER answers and waiting out elections.</summary>
    internal static async Task<ProduceResponse> ProduceWithRetry(IReadOnlyList<Node> nodes, string value, Action? onFailedAttempt = null)
    {
        var deadline = Stopwatch.StartNew();
        var target = nodes[0];
        while (true)
        {
            try
            {
                return await target.Client.ProduceAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8(value) } }, Timeout(5));
            }
            catch (RpcException ex) when (ex.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded && deadline.Elapsed < TimeSpan.FromSeconds(30))
            {
                onFailedAttempt?.Invoke();
                var leaderId = ex.GetDetail<ErrorInfo>() is { Reason: "NOT_LEADER" } info ? info.Metadata["leader_id"] : null;
                target = nodes.FirstOrDefault(n => n.Id == leaderId) ?? nodes[(nodes.ToList().IndexOf(target) + 1) % nodes.Count];
                await Task.Delay(100); // a retry's back-off during an election: no event tells the client a leader is up
            }
        }
    }

    /// <summary>GetServers on <paramref name="node"/> once it names exactly <paramref name="ids"/>, each with its gRPC address.</summary>
    internal static async Task<IReadOnlyList<Server>> WaitForServers(Node node, string[] ids)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            var servers = (await node.Client.GetServersAsync(new GetServersRequest(), Timeout())).Servers;
            if (servers.Select(s => s.Id).Order().SequenceEqual(ids) && servers.All(s => s.RpcAddr.Length > 0)) return servers;
            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(30), $"{node.Id} lists {string.Join(", ", servers.Select(s => s.Id))}");
            await Task.Delay(100); // the node learns names from members' metadata on its own schedule
        }
    }

    /// <summary>Asks the nodes' GetServers until they agree on a leader (other than <paramref name="except"/>) that knows it leads.</summary>
    internal static async Task<Node> WaitForLeader(IReadOnlyList<Node> nodes, string? except)
    {
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(30))
        {
            var seen = new List<string>();
            foreach (var node in nodes)
            {
                try
                {
                    var servers = await node.Client.GetServersAsync(new GetServersRequest(), Timeout(2));
                    seen.Add(servers.Servers.FirstOrDefault(s => s.IsLeader)?.Id ?? "");
                }
                catch (RpcException)
                {
                    seen.Add("");
                }
            }
            if (seen.Distinct().Count() == 1 && seen[0] is { Length: > 0 } id && id != except && nodes.FirstOrDefault(n => n.Id == id) is { } leader)
            {
                // Leading is also being able to commit: a dry run proves nothing, so wait for a real write.
                return leader;
            }
            await Task.Delay(100); // polling the nodes' own view of the election, which has no event a test can await
        }
        throw new TimeoutException("no leader within 30 s");
    }

    /// <summary>The first <paramref name="count"/> records of a topic on one node (waiting for them to be applied there).</summary>
    internal static async Task<List<Record>> ReadAll(Node node, string topic, int count)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                using var call = node.Client.ConsumeStream(new ConsumeRequest { Topic = topic, Offset = 0 }, Timeout(20));
                var records = new List<Record>();
                while (records.Count < count && await call.ResponseStream.MoveNext(default)) records.Add(call.ResponseStream.Current.Record);
                return records;
            }
            catch (RpcException ex) when (ex.StatusCode is StatusCode.NotFound or StatusCode.Unavailable && deadline.Elapsed < TimeSpan.FromSeconds(20))
            {
                await Task.Delay(100); // the topic is not applied on this node yet, or it is starting
            }
        }
    }
}

/// <summary>
/// One `conduit serve` cluster node as a child process, restartable on its folder; on
/// 127.0.0.1, or on <paramref name="host"/> inside the network namespace <paramref name="netns"/> (NetworkLab).
/// </summary>
internal sealed class Node(string id, int rpcPort, int raftPort, string dataDir, string host = "127.0.0.1", string? netns = null) : IAsyncDisposable
{
    private ChildProcess? _process;
    private GrpcChannel? _channel;
    private readonly System.Text.StringBuilder _history = new();

    public string Id => id;
    public int RpcPort => rpcPort;
    public int RaftPort => raftPort;
    public string DataDir => dataDir;
    public string Host => host;
    public string RpcAddress => $"{host}:{rpcPort}";
    public GrpcChannel Channel => _channel!;
    public Protos.Log.V1.Log.LogClient Client { get; private set; } = null!;
    public LogAdmin.LogAdminClient Admin { get; private set; } = null!;

    /// <summary>More settings for the process (CONDUIT__... variables).</summary>
    public Dictionary<string, string> Environment { get; } = [];

    /// <summary>More `serve` flags.</summary>
    public string[] Flags { get; set; } = [];

    /// <summary>Set: the gRPC URL is https:// and the test's channel uses these options (give --tls-cert/--tls-key in <see cref="Flags"/>).</summary>
    public System.Net.Security.SslClientAuthenticationOptions? Tls { get; set; }

    public ChildProcess Process => _process ?? throw new InvalidOperationException($"{id} is not running");

    /// <summary>Starts (or restarts) the node: with <paramref name="peers"/> as --cluster-peers, or, with <paramref name="join"/>, waiting to be added.</summary>
    public async Task Start(string? peers, IReadOnlyDictionary<string, string>? settings = null, string logLevel = "Warning", bool join = false)
    {
        var environment = new Dictionary<string, string>(Environment)
        {
            // Elections in a few hundred ms; generous enough for a loaded 2-core machine.
            ["CONDUIT__CLUSTER__LOWERELECTIONTIMEOUTMS"] = "400",
            ["CONDUIT__CLUSTER__UPPERELECTIONTIMEOUTMS"] = "800",
        };
        foreach (var (key, value) in settings ?? new Dictionary<string, string>()) environment[key] = value;
        if (_process is not null)
        {
            await _process.DisposeAsync(); // killed before a restart
            _history.Append(_process.Output).Append(_process.Errors).Append("--- restarted\n");
        }
        string[] membership = join ? ["--cluster-join"] : peers is null ? [] : ["--cluster-peers", peers];
        var scheme = Tls is null ? "http" : "https";
        string[] serve = ["serve", "--urls", $"{scheme}://{host}:{rpcPort}", "--web-urls", "none", "--data", dataDir,
            "--cluster-node-id", id, "--cluster-address", $"{host}:{raftPort}", .. membership, "--log-level", logLevel,
            .. (netns is null ? Array.Empty<string>() : ["--allow-open"]), .. Flags]; // a namespace's private bridge, not loopback
        // `ip netns exec` enters the namespace and execs dotnet: the same pid, so signals reach the server.
        _process = netns is null ? ChildProcess.Conduit(environment, serve) : ChildProcess.Start(environment, "ip", ["netns", "exec", netns, "dotnet", Paths.ConduitDll, .. serve]);
        await _process.WaitForLine("listening on", TimeSpan.FromSeconds(60));
        _channel?.Dispose();
        _channel = ConduitChannel.ForAddress($"{scheme}://{host}:{rpcPort}", tls: Tls);
        Client = new Protos.Log.V1.Log.LogClient(_channel);
        Admin = new LogAdmin.LogAdminClient(_channel);
    }

    /// <summary>What this node's processes printed (warnings and up), every run so far.</summary>
    public string Log => _history + (_process is null ? "" : _process.Output + _process.Errors);

    public void Kill() => _process!.Signal("KILL");

    public void Signal(string name) => _process!.Signal(name);

    public async ValueTask DisposeAsync()
    {
        _channel?.Dispose();
        if (_process is not null) await _process.DisposeAsync();
    }
}
