using System.Collections.Concurrent;
using System.Diagnostics;
using Conduit.Protos.Log.V1;
using Xunit.Abstractions;

namespace Conduit.Cluster.Tests;

/// <summary>
/// Seeded faults against 3 real nodes under a producer that follows the leader: kill -9 of the
/// leader or a follower, SIGSTOP of a node past the election timeout then SIGCONT, a follower
/// restarted with a wiped folder. Then the checker: every acknowledged record is at its
/// acknowledged offset on every node, offsets are dense, the replicas are identical. CI runs
/// 2 cycles; `bash scripts/cluster-faults.sh N SEED` runs N.
/// </summary>
public sealed class FaultTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly TempDir _dir = new("conduit-cluster-faults-");
    private readonly List<Node> _nodes = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var node in _nodes) await node.DisposeAsync();
        _dir.Dispose();
    }

    [Fact]
    public async Task Seeded_faults_lose_no_acknowledged_record_and_leave_identical_replicas()
    {
        var cycles = int.TryParse(Environment.GetEnvironmentVariable("CONDUIT_CLUSTER_FAULT_CYCLES"), out var c) ? c : 2;
        var seed = int.TryParse(Environment.GetEnvironmentVariable("CONDUIT_CLUSTER_FAULT_SEED"), out var s) ? s : 1;
        var random = new Random(seed);
        var clock = Stopwatch.StartNew();
        foreach (var id in new[] { "n1", "n2", "n3" }) _nodes.Add(new Node(id, Ports.Free(), Ports.Free(), Path.Combine(_dir.Path, id)));
        var peers = string.Join(',', _nodes.Select(n => $"{n.Id}=127.0.0.1:{n.RaftPort}"));
        await Task.WhenAll(_nodes.Select(n => n.Start(peers)));
        await ClusterTests.WaitForLeader(_nodes, except: null);

        // The producer: one record at a time to whichever node leads; what was acknowledged, and
        // which values had a failed attempt first (those may be in the log twice: no idempotence yet).
        var acknowledged = new ConcurrentDictionary<ulong, string>();
        var retried = new ConcurrentDictionary<string, bool>();
        using var stop = new CancellationTokenSource();
        var producer = Task.Run(async () =>
        {
            for (var n = 0; !stop.IsCancellationRequested; n++)
            {
                var value = $"s{seed}-{n}";
                var response = await ClusterTests.ProduceWithRetry(_nodes, value, () => retried[value] = true);
                Assert.True(acknowledged.TryAdd(response.Offset, value), $"offset {response.Offset} acknowledged twice");
            }
        });

        var started = Stopwatch.StartNew();
        while (acknowledged.Count < 20 && started.Elapsed < TimeSpan.FromSeconds(30) && !producer.IsCompleted) await Task.Delay(50);
        for (var cycle = 1; cycle <= cycles; cycle++)
        {
            var before = acknowledged.Count;
            var leader = await ClusterTests.WaitForLeader(_nodes, except: null);
            var followers = _nodes.Where(n => n != leader).ToList();
            var fault = random.Next(4);
            // SIGSTOP may hit the leader too: it wakes up deposed, with writes it must not answer as committed.
            var victim = fault switch { 0 => leader, 2 => _nodes[random.Next(_nodes.Count)], _ => followers[random.Next(followers.Count)] };
            var pause = TimeSpan.FromMilliseconds(1000 + random.Next(1500)); // past the 800 ms election timeout
            output.WriteLine($"{clock.ElapsedMilliseconds} ms: cycle {cycle}: {(fault switch { 0 => "kill -9 leader", 1 => "kill -9 follower", 2 => "SIGSTOP", _ => "wipe follower" })} {victim.Id}{(victim == leader ? " (leader)" : "")} for {pause.TotalMilliseconds} ms, {before} acknowledged so far");
            switch (fault)
            {
                case 0 or 1:
                    victim.Kill();
                    await Task.Delay(pause); // the fault's duration, not a synchronisation
                    await victim.Start(peers);
                    break;
                case 2:
                    victim.Signal("STOP");
                    await Task.Delay(pause);
                    victim.Signal("CONT");
                    break;
                default:
                    victim.Kill();
                    Directory.Delete(victim.DataDir, recursive: true);
                    await Task.Delay(pause);
                    await victim.Start(peers);
                    break;
            }
            // Produce goes on after the fault.
            var deadline = Stopwatch.StartNew();
            while (acknowledged.Count < before + 20 && deadline.Elapsed < TimeSpan.FromSeconds(30) && !producer.IsCompleted) await Task.Delay(50);
            Assert.False(producer.IsFaulted, producer.Exception?.ToString());
            Assert.True(acknowledged.Count >= before + 20, $"produce did not resume after cycle {cycle}");
        }
        await stop.CancelAsync();
        await producer;

        // The checker.
        var finalLeader = await ClusterTests.WaitForLeader(_nodes, except: null);
        var next = (int)(await finalLeader.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "" }, ClusterTests.Timeout())).NextOffset;
        var reference = await ClusterTests.ReadAll(finalLeader, "", next);
        Assert.Equal(next, reference.Count);
        for (var i = 0; i < reference.Count; i++) Assert.Equal((ulong)i, reference[i].Offset); // dense
        foreach (var (offset, value) in acknowledged) Assert.Equal(value, reference[(int)offset].Value.ToStringUtf8());
        var duplicates = reference.GroupBy(r => r.Value.ToStringUtf8()).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
        Assert.All(duplicates, d => Assert.True(retried.ContainsKey(d), $"'{d}' is in the log twice but was sent once"));
        foreach (var node in _nodes) Assert.Equal(reference, await ClusterTests.ReadAll(node, "", next));
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: seed {seed}, {cycles} cycles: {acknowledged.Count} acknowledged, {next} records on each of 3 nodes, identical; {duplicates.Count} sent twice after a failed attempt");
    }
}
