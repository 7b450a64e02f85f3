using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Conduit.Protos.Log.V1;
using Google.Protobuf;
using Grpc.Core;
using Record = Conduit.Protos.Log.V1.Record;

namespace Conduit.Cluster.Tests;

// Three real `conduit serve` nodes taking a snapshot every 10 Raft entries: a follower whose data
// folder is wiped after the log was compacted rejoins by InstallSnapshot (the leader's topic files)
// and serves the identical records, with the truncated topic's first offset and the idempotent
// producer's state; restarted, it applies only the entries after its snapshot.
public sealed partial class ClusterTests
{
    private static readonly Dictionary<string, string> s_snapshotSettings = new()
    {
        ["CONDUIT__CLUSTER__SNAPSHOTEVERY"] = "10",
    };

    [Fact]
    public async Task A_wiped_follower_rejoins_from_the_leaders_snapshot_after_compaction_and_serves_identical_records()
    {
        var clock = Stopwatch.StartNew();
        foreach (var id in new[] { "n1", "n2", "n3" }) _nodes.Add(new Node(id, Ports.Free(), Ports.Free(), Path.Combine(_dir.Path, id)));
        var peers = string.Join(',', _nodes.Select(n => $"{n.Id}=127.0.0.1:{n.RaftPort}"));
        await Task.WhenAll(_nodes.Select(n => n.Start(peers, s_snapshotSettings)));
        var leader = await WaitForLeader(_nodes, except: null);

        // A topic of small segments, truncated; an idempotent producer on the default topic.
        await leader.Admin.CreateTopicAsync(new CreateTopicRequest { Name = "orders", Settings = new TopicSettings { SegmentBytes = 1024 } }, Timeout());
        for (var i = 0; i < 20; i++)
        {
            await leader.Client.ProduceAsync(new ProduceRequest { Topic = "orders", Record = new Record { Value = ByteString.CopyFromUtf8(new string('o', 200) + i) } }, Timeout());
        }
        await leader.Admin.TruncateAsync(new TruncateRequest { Topic = "orders", BeforeOffset = 10 }, Timeout());
        var producer = await leader.Client.InitProducerAsync(new InitProducerRequest { Topic = "" }, Timeout());
        ProduceRequest Produced(ulong sequence) => new()
        {
            Record = new Record { Value = ByteString.CopyFromUtf8($"p{sequence}") },
            ProducerId = producer.ProducerId,
            ProducerEpoch = producer.ProducerEpoch,
            Sequence = sequence,
        };
        for (var sequence = 0UL; sequence < 15; sequence++) Assert.Equal(sequence, (await leader.Client.ProduceAsync(Produced(sequence), Timeout())).Offset);

        // Every node snapshots by itself, the state it noted 10 entries earlier: the leader's covers
        // the truncation and the first of the producer's records.
        var leaderSnapshot = await WaitForSnapshot(leader, atLeast: 20);
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: {leader.Id} snapshot of entry {leaderSnapshot}");

        // A follower wiped: the entries it needs are gone from the WAL, so it gets the snapshot.
        var wiped = _nodes.First(n => n != leader);
        wiped.Kill();
        Directory.Delete(wiped.DataDir, recursive: true);
        await wiped.Start(peers, s_snapshotSettings, logLevel: "Information");
        await wiped.Process.WaitForLine("Installed the leader's snapshot of entry", TimeSpan.FromSeconds(60));
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: {wiped.Id} installed the snapshot");
        var defaults = await ReadAll(leader, "", 15);
        Assert.Equal(defaults, await ReadAll(wiped, "", 15));
        var leaderOrders = await leader.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "orders" }, Timeout());
        Assert.True(leaderOrders.FirstOffset > 0, "the truncation removed segments");
        var wipedOrders = await WaitForTopic(wiped, "orders", leaderOrders.NextOffset);
        Assert.Equal(leaderOrders.FirstOffset, wipedOrders.FirstOffset);
        Assert.Equal(leaderOrders.Settings, wipedOrders.Settings);
        for (var offset = leaderOrders.FirstOffset; offset < leaderOrders.NextOffset; offset++)
        {
            var request = new ConsumeRequest { Topic = "orders", Offset = offset };
            Assert.Equal((await leader.Client.ConsumeAsync(request, Timeout())).Record, (await wiped.Client.ConsumeAsync(request, Timeout())).Record);
        }

        // The producer's retry of its last record, and its next one: the wiped node's apply decides
        // "duplicate" from the producer state it installed, as the others do, so the logs stay equal.
        Assert.Equal(14UL, (await leader.Client.ProduceAsync(Produced(14), Timeout())).Offset);
        Assert.Equal(15UL, (await leader.Client.ProduceAsync(Produced(15), Timeout())).Offset);
        var after = await ReadAll(leader, "", 16);
        foreach (var node in _nodes) Assert.Equal(after, await ReadAll(node, "", 16));

        // Restarted, the node applies only the entries after its snapshot.
        wiped.Kill();
        await wiped.Start(peers, s_snapshotSettings, logLevel: "Information");
        var started = await wiped.Process.WaitForLine(@"applied up to entry (\d+) \((\d+) entries after the snapshot of entry (\d+)\)", TimeSpan.FromSeconds(60));
        var (applied, replayed, snapshot) = (long.Parse(started.Groups[1].Value, CultureInfo.InvariantCulture), long.Parse(started.Groups[2].Value, CultureInfo.InvariantCulture), long.Parse(started.Groups[3].Value, CultureInfo.InvariantCulture));
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: restarted {wiped.Id}: applied up to {applied}, {replayed} after the snapshot of {snapshot}");
        Assert.True(snapshot >= leaderSnapshot);
        Assert.Equal(applied - snapshot, replayed);
        Assert.Equal(after, await ReadAll(wiped, "", 16));
    }

    /// <summary>The entry a node's snapshot covers, once it is at least <paramref name="atLeast"/>.</summary>
    private static async Task<long> WaitForSnapshot(Node node, long atLeast)
    {
        var path = Path.Combine(node.DataDir, "raft", "snapshot", "manifest.json");
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(30))
        {
            try
            {
                using var manifest = JsonDocument.Parse(await File.ReadAllBytesAsync(path));
                var index = manifest.RootElement.GetProperty("index").GetInt64();
                if (index >= atLeast) return index;
            }
            catch (Exception ex) when (ex is IOException or JsonException)
            {
                // not written yet (it is replaced by a rename, never half written)
            }
            await Task.Delay(100); // a snapshot is taken in the node's background, which no client can await
        }
        throw new TimeoutException($"{node.Id} took no snapshot of entry {atLeast} or later within 30 s");
    }

    private static async Task<TopicInfo> WaitForTopic(Node node, string topic, ulong nextOffset, TimeSpan? within = null)
    {
        var deadline = within ?? TimeSpan.FromSeconds(30);
        var clock = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                var info = await node.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = topic }, Timeout());
                if (info.NextOffset >= nextOffset || clock.Elapsed > deadline) return info;
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.NotFound && clock.Elapsed < deadline)
            {
                // not applied on this node yet
            }
            await Task.Delay(100); // applied on this node in the background
        }
    }
}
