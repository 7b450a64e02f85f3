using System.Collections.Concurrent;
using System.Diagnostics;
using Conduit.Protos.Log.V1;
using Grpc.Core;
using Xunit.Abstractions;

namespace Conduit.Cluster.Tests;

/// <summary>
/// Seeded faults against 3 (or 5) real nodes under two producers that follow the leader and a
/// consumer on every node: kill -9 of the leader or a follower, SIGSTOP of a node past the election
/// timeout then SIGCONT, a follower restarted with a wiped folder, and, where network namespaces
/// can be made (root), the leader isolated and a majority/minority split, then healed. Then the
/// checker: every acknowledged record is at its acknowledged offset on every node, offsets are
/// dense, every node holds the same record (all fields, so the same bytes) at every offset, and
/// whatever a consumer read on any node during the faults is what the offset holds at the end.
/// CI runs 3 cycles of seed 1 on 3 nodes; `bash scripts/cluster-faults.sh N SEED [NODES]` runs N.
/// </summary>
public sealed class FaultTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly TempDir _dir = new("conduit-cluster-faults-");
    private readonly List<Node> _nodes = [];
    private NetworkLab? _lab;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var node in _nodes) await node.DisposeAsync();
        _lab?.Dispose();
        _dir.Dispose();
    }

    private static int Setting(string name, int fallback) => int.TryParse(Environment.GetEnvironmentVariable(name), out var value) ? value : fallback;

    [Fact]
    public async Task Seeded_faults_lose_no_acknowledged_record_and_leave_identical_replicas()
    {
        var cycles = Setting("CONDUIT_CLUSTER_FAULT_CYCLES", 3);
        var seed = Setting("CONDUIT_CLUSTER_FAULT_SEED", 1);
        var count = Setting("CONDUIT_CLUSTER_FAULT_NODES", 3);
        Assert.True(count is 3 or 5, "CONDUIT_CLUSTER_FAULT_NODES is 3 or 5");
        var random = new Random(seed);
        var clock = Stopwatch.StartNew();
        void Log(string line) => output.WriteLine($"{clock.ElapsedMilliseconds} ms: {line}");
        _lab = NetworkLab.TryCreate(count, Log);
        for (var i = 1; i <= count; i++)
        {
            // In a namespace of its own each node has the whole port space: fixed ports will do.
            _nodes.Add(_lab is null
                ? new Node($"n{i}", Ports.Free(), Ports.Free(), Path.Combine(_dir.Path, $"n{i}"))
                : new Node($"n{i}", 50051, 7001, Path.Combine(_dir.Path, $"n{i}"), _lab.Address(i), _lab.Namespace(i)));
        }
        var peers = string.Join(',', _nodes.Select(n => $"{n.Id}={n.Host}:{n.RaftPort}"));
        await Task.WhenAll(_nodes.Select(n => n.Start(peers)));
        await ClusterTests.WaitForLeader(_nodes, except: null);
        Log($"{count} nodes up{(_lab is null ? " on 127.0.0.1" : $" in network namespaces ({_lab.Bridge})")}");

        // Two producers, one record at a time each, to whichever node leads; what was acknowledged,
        // and which values had a failed attempt first (those may be in the log twice: no idempotence here).
        var acknowledged = new ConcurrentDictionary<ulong, string>();
        var retried = new ConcurrentDictionary<string, bool>();
        using var stop = new CancellationTokenSource();
        var producers = Enumerable.Range(0, 2).Select(p => Task.Run(async () =>
        {
            for (var n = 0; !stop.IsCancellationRequested; n++)
            {
                var value = $"s{seed}-p{p}-{n}";
                var response = await ClusterTests.ProduceWithRetry(_nodes, value, () => retried[value] = true);
                Assert.True(acknowledged.TryAdd(response.Offset, value), $"offset {response.Offset} acknowledged twice");
            }
        })).ToList();
        // A consumer on every node: what each node served, at which offset, through the faults.
        var served = new ConcurrentBag<(string Node, ulong Offset, string Value)>();
        var consumers = _nodes.Select(node => Task.Run(() => Consume(node, served, stop.Token))).ToList();
        Task Failed() => producers.Concat(consumers).FirstOrDefault(t => t.IsFaulted) ?? Task.CompletedTask;

        async Task AwaitAcknowledged(int target, string after)
        {
            var deadline = Stopwatch.StartNew();
            // Polled: the producers add to a shared collection as their calls are answered; a fault cycle only needs the count to have moved on.
            while (acknowledged.Count < target && deadline.Elapsed < TimeSpan.FromSeconds(60) && !Failed().IsFaulted) await Task.Delay(50);
            Assert.False(Failed().IsFaulted, Failed().Exception?.ToString());
            Assert.True(acknowledged.Count >= target, $"produce did not resume {after}");
        }

        await AwaitAcknowledged(20, "at start");
        var faults = _lab is null ? 4 : 6;
        // CONDUIT_CLUSTER_FAULT_KINDS=sigstop-leader: every cycle SIGSTOPs the leader (the seed still draws the pauses).
        var stopLeaderOnly = Environment.GetEnvironmentVariable("CONDUIT_CLUSTER_FAULT_KINDS") == "sigstop-leader";
        var drawn = new List<string>();
        for (var cycle = 1; cycle <= cycles; cycle++)
        {
            var before = acknowledged.Count;
            var leader = await ClusterTests.WaitForLeader(_nodes, except: null);
            var followers = _nodes.Where(n => n != leader).ToList();
            var fault = random.Next(faults);
            // SIGSTOP may hit the leader too: it wakes up deposed, with writes it must not answer as committed.
            var victim = fault switch { 0 or 4 => leader, 2 => _nodes[random.Next(_nodes.Count)], _ => followers[random.Next(followers.Count)] };
            if (stopLeaderOnly) (fault, victim) = (2, leader); // reproducing the deposed leader's divergence (docs/cluster.md)
            var pause = TimeSpan.FromMilliseconds(1000 + random.Next(1500)); // past the 800 ms election timeout
            var name = fault switch { 0 => "kill -9", 1 => "kill -9", 2 => "SIGSTOP", 3 => "wipe", 4 => "isolate", _ => "split" };
            switch (fault)
            {
                case 0 or 1:
                    Log($"cycle {cycle}: kill -9 {Describe(victim, leader)}, restart after {pause.TotalMilliseconds} ms; {before} acknowledged so far");
                    victim.Kill();
                    await Task.Delay(pause); // the fault's duration, not a synchronisation
                    await victim.Start(peers);
                    break;
                case 2:
                    Log($"cycle {cycle}: SIGSTOP {Describe(victim, leader)} for {pause.TotalMilliseconds} ms; {before} acknowledged so far");
                    victim.Signal("STOP");
                    await Task.Delay(pause);
                    victim.Signal("CONT");
                    break;
                case 3:
                    Log($"cycle {cycle}: wipe {Describe(victim, leader)}, restart after {pause.TotalMilliseconds} ms; {before} acknowledged so far");
                    victim.Kill();
                    Directory.Delete(victim.DataDir, recursive: true);
                    await Task.Delay(pause);
                    await victim.Start(peers);
                    break;
                case 4:
                    Log($"cycle {cycle}: isolate {Describe(victim, leader)} for {pause.TotalMilliseconds} ms; {before} acknowledged so far");
                    _lab!.Isolate([Index(victim)]);
                    await AwaitAcknowledged(before + 10, $"with leader {victim.Id} isolated"); // the majority elects and goes on
                    await Task.Delay(pause);
                    _lab.Heal();
                    break;
                default:
                    // A minority of the largest size (1 of 3, 2 of 5); half the time it holds the leader.
                    var minority = new List<Node>();
                    if (random.Next(2) == 0) minority.Add(leader);
                    minority.AddRange(followers.OrderBy(_ => random.Next()).Take(count / 2 - minority.Count));
                    Log($"cycle {cycle}: split off {string.Join(",", minority.Select(n => Describe(n, leader)))} for {pause.TotalMilliseconds} ms; {before} acknowledged so far");
                    _lab!.Isolate(minority.Select(Index).ToList());
                    await AwaitAcknowledged(before + 10, "in the majority of a split"); // the majority goes on
                    await Task.Delay(pause);
                    _lab.Heal();
                    break;
            }
            drawn.Add(name);
            // Produce goes on after the fault (and after the heal).
            await AwaitAcknowledged(acknowledged.Count + 20, $"after cycle {cycle}");
        }
        await stop.CancelAsync();
        await Task.WhenAll(producers);
        await Task.WhenAll(consumers);

        // The checker.
        var finalLeader = await ClusterTests.WaitForLeader(_nodes, except: null);
        var next = (int)(await finalLeader.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "" }, ClusterTests.Timeout())).NextOffset;
        var reference = await ClusterTests.ReadAll(finalLeader, "", next);
        Assert.Equal(next, reference.Count);
        for (var i = 0; i < reference.Count; i++) Assert.Equal((ulong)i, reference[i].Offset); // dense
        foreach (var (offset, value) in acknowledged) Assert.Equal(value, reference[(int)offset].Value.ToStringUtf8());
        var duplicates = reference.GroupBy(r => r.Value.ToStringUtf8()).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
        Assert.All(duplicates, d => Assert.True(retried.ContainsKey(d), $"'{d}' is in the log twice but was sent once"));
        // Every node: the same record (value, key, headers, timestamp, offset) at every offset.
        foreach (var node in _nodes)
        {
            var records = await ClusterTests.ReadAll(node, "", next);
            var first = Enumerable.Range(0, Math.Min(records.Count, reference.Count)).FirstOrDefault(i => !records[i].Equals(reference[i]), -1);
            if (first < 0 && records.Count == reference.Count) continue;
            string Window(List<Protos.Log.V1.Record> log) => string.Join(", ", log.Skip(Math.Max(0, first - 2)).Take(6).Select(r => $"{r.Offset}:{r.Value.ToStringUtf8()}@{r.TimestampUnixMs}"));
            foreach (var other in _nodes) output.WriteLine($"--- {other.Id}'s log:\n{other.Log}");
            Assert.Fail($"{node.Id} differs from {finalLeader.Id} (the leader) at offset {first} of {next}: {node.Id} has [{Window(records)}], {finalLeader.Id} has [{Window(reference)}]");
        }
        // No node served, at any time, a record that is not the one its offset holds now (nothing uncommitted was read).
        foreach (var (node, offset, value) in served)
        {
            Assert.True(offset < (ulong)next && reference[(int)offset].Value.ToStringUtf8() == value, $"{node} served '{value}' at {offset}, which holds '{(offset < (ulong)next ? reference[(int)offset].Value.ToStringUtf8() : "nothing")}'");
        }
        Log($"seed {seed}, {cycles} cycles on {count} nodes ({string.Join(", ", drawn.GroupBy(d => d).Select(g => $"{g.Key} ×{g.Count()}"))}): " +
            $"{acknowledged.Count} acknowledged, {next} records on each node, identical; {served.Count} reads by consumers checked; {duplicates.Count} sent twice after a failed attempt");
    }

    private int Index(Node node) => _nodes.IndexOf(node) + 1;

    private static string Describe(Node node, Node leader) => node == leader ? $"{node.Id} (leader)" : node.Id;

    /// <summary>Follows a node's log from offset 0, across its restarts, recording every record it serves.</summary>
    private static async Task Consume(Node node, ConcurrentBag<(string, ulong, string)> served, CancellationToken stop)
    {
        ulong next = 0;
        while (!stop.IsCancellationRequested)
        {
            try
            {
                using var call = node.Client.ConsumeStream(new ConsumeRequest { Offset = next }, cancellationToken: stop);
                while (await call.ResponseStream.MoveNext(stop))
                {
                    var record = call.ResponseStream.Current.Record;
                    Assert.Equal(next, record.Offset); // in order, no gap
                    served.Add((node.Id, record.Offset, record.Value.ToStringUtf8()));
                    next++;
                }
            }
            catch (RpcException) when (!stop.IsCancellationRequested)
            {
                // The node is down, stopped, starting or wiped (the topic not there yet): try again from the next offset.
                await Task.Delay(200, CancellationToken.None); // no event tells a client that a node is back
            }
            catch (Exception ex) when (stop.IsCancellationRequested && ex is RpcException or OperationCanceledException)
            {
                return;
            }
        }
    }
}
