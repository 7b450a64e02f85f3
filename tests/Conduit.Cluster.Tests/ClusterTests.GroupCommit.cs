using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Google.Protobuf;
using Grpc.Core;
using Record = Conduit.Protos.Log.V1.Record;

namespace Conduit.Cluster.Tests;

/// <summary>The leader's group commit: records that arrive while an entry is in flight share the next entry.</summary>
public sealed partial class ClusterTests
{
    private static readonly GetServersRequest Self = new() { Progress = GetServersRequest.Types.Progress.Self };

    /// <summary>Three nodes n1-n3 started together; their leader once it can write (its first entry of the term is committed).</summary>
    private async Task<Node> StartThree(IReadOnlyDictionary<string, string>? settings = null)
    {
        foreach (var id in new[] { "n1", "n2", "n3" }) _nodes.Add(new Node(id, Ports.Free(), Ports.Free(), Path.Combine(_dir.Path, id)));
        var peers = string.Join(',', _nodes.Select(n => $"{n.Id}=127.0.0.1:{n.RaftPort}"));
        await Task.WhenAll(_nodes.Select(n => n.Start(peers, settings)));
        var leader = await WaitForLeader(_nodes, except: null);
        await ProduceWithRetry([leader], "warm-up");
        return leader;
    }

    private static async Task<ulong> LastIndex(Node node) =>
        (await node.Client.GetServersAsync(Self, Timeout())).Servers.Single(s => s.Id == node.Id).LastIndex;

    private static async Task<ulong> CommitIndex(Node node) =>
        (await node.Client.GetServersAsync(Self, Timeout())).Servers.Single(s => s.Id == node.Id).CommitIndex;

    [Fact]
    public async Task A_ProduceStream_of_small_records_is_acknowledged_in_order_with_far_fewer_raft_entries_than_records()
    {
        var leader = await StartThree();

        // The conduit CLI's ProduceStream (--no-idempotent --batch-bytes 0: one message per line) of 2000 records of 100 bytes.
        const int count = 2000;
        var before = await CommitIndex(leader);
        await using (var cli = ChildProcess.Conduit("log", "produce", "--server", $"http://127.0.0.1:{leader.RpcPort}", "--topic", "stream", "--no-idempotent", "--batch-bytes", "0", "--timeout", "120"))
        {
            for (var i = 0; i < count; i++) await cli.StandardInput.WriteLineAsync($"{i:D5}{new string('x', 95)}");
            cli.StandardInput.Close();
            Assert.True(await cli.WaitForExit(TimeSpan.FromSeconds(180)) == 0, cli.Errors);
            // Acknowledged in the order sent, offsets dense from 0.
            Assert.Equal(Enumerable.Range(0, count).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)), cli.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        }
        var entries = await CommitIndex(leader) - before;
        output.WriteLine($"{count} records of a ProduceStream in {entries} Raft entries");
        // One entry per record before the group commit; a round trip takes at least the leader's
        // WAL flush and a follower's answer, in which time the stream sends many records.
        Assert.True(entries <= count / 4, $"{count} records took {entries} entries");

        // Every node holds the same records at the same offsets, in the order sent.
        var reference = await ReadAll(leader, "stream", count);
        Assert.Equal(Enumerable.Range(0, count).Select(i => $"{i:D5}{new string('x', 95)}"), reference.Select(r => r.Value.ToStringUtf8()));
        Assert.Equal(Enumerable.Range(0, count).Select(i => (ulong)i), reference.Select(r => r.Offset));
        foreach (var node in _nodes) Assert.Equal(reference, await ReadAll(node, "stream", count));

        // Concurrent unary Produces to one topic share entries too.
        before = await CommitIndex(leader);
        var offsets = await Task.WhenAll(Enumerable.Range(0, 200).Select(async i =>
            (await leader.Client.ProduceAsync(new ProduceRequest { Topic = "unary", Record = new Record { Value = ByteString.CopyFromUtf8($"u{i}") } }, Timeout(60))).Offset));
        entries = await CommitIndex(leader) - before;
        output.WriteLine($"200 concurrent Produce calls in {entries} Raft entries");
        Assert.Equal(Enumerable.Range(0, 200).Select(i => (ulong)i), offsets.Order());
        Assert.True(entries < 200, $"200 concurrent records took {entries} entries");
        var unary = await ReadAll(leader, "unary", 200);
        foreach (var node in _nodes) Assert.Equal(unary, await ReadAll(node, "unary", 200));
    }

    [Fact]
    public async Task An_idempotent_ProduceStream_merged_into_shared_entries_is_deduplicated_and_fenced_alike_on_every_node()
    {
        var leader = await StartThree();
        var producer = await leader.Client.InitProducerAsync(new InitProducerRequest { Topic = "idem" }, Timeout());
        ProduceRequest Produced(ulong sequence) => new()
        {
            Topic = "idem", ProducerId = producer.ProducerId, ProducerEpoch = producer.ProducerEpoch, Sequence = sequence,
            Record = new Record { Value = ByteString.CopyFromUtf8($"s{sequence}") },
        };

        // 300 records, each of the first 100 sent twice in a row (a retry): the repeat is answered
        // with the first one's offset and appended nowhere, whichever entry each copy went into.
        var sent = new List<ulong>();
        for (ulong s = 0; s < 300; s++)
        {
            sent.Add(s);
            if (s < 100) sent.Add(s);
        }
        using (var call = leader.Client.ProduceStream(Timeout(120)))
        {
            var writing = Task.Run(async () =>
            {
                foreach (var s in sent) await call.RequestStream.WriteAsync(Produced(s));
                await call.RequestStream.CompleteAsync();
            });
            var answers = new List<ulong>();
            await foreach (var answer in call.ResponseStream.ReadAllAsync()) answers.Add(answer.Offset);
            await writing;
            Assert.Equal(sent, answers); // sequence s is at offset s: duplicates answered where the first went
        }
        var reference = await ReadAll(leader, "idem", 300);
        Assert.Equal(Enumerable.Range(0, 300).Select(i => $"s{i}"), reference.Select(r => r.Value.ToStringUtf8()));
        foreach (var node in _nodes)
        {
            Assert.Equal(reference, await ReadAll(node, "idem", 300));
            var topic = (await node.Admin.ListTopicsAsync(new ListTopicsRequest(), Timeout())).Topics.Single(t => t.Name == "idem");
            Assert.Equal(300UL, topic.NextOffset); // no copy anywhere
        }

        // A new epoch fences the old one at once, even mid-stream.
        await leader.Client.InitProducerAsync(new InitProducerRequest { Topic = "idem", ProducerId = producer.ProducerId }, Timeout());
        using var late = leader.Client.ProduceStream(Timeout(60));
        await late.RequestStream.WriteAsync(Produced(300));
        await late.RequestStream.CompleteAsync();
        var fenced = await Assert.ThrowsAsync<RpcException>(async () => await late.ResponseStream.ReadAllAsync().ToListAsync());
        Assert.Equal("PRODUCER_FENCED", fenced.GetDetail<Google.Rpc.ErrorInfo>()!.Reason);
    }

    [Fact]
    public async Task An_idempotent_batch_that_reaches_the_leader_ahead_of_its_predecessor_is_held_for_it_and_every_node_has_both_in_order()
    {
        // Through Raft the gap shows only when the entry is applied: the held call is proposed again
        // once its predecessor is applied, instead of being answered SEQUENCE_GAP.
        var leader = await StartThree(new Dictionary<string, string> { ["CONDUIT__LOG__OUTOFORDERHOLDMS"] = "60000" });
        var producer = await leader.Client.InitProducerAsync(new InitProducerRequest { Topic = "held" }, Timeout());
        ProduceBatchRequest Batch(ulong sequence, params string[] values)
        {
            var batch = new ProduceBatchRequest { Topic = "held", ProducerId = producer.ProducerId, ProducerEpoch = producer.ProducerEpoch, Sequence = sequence };
            foreach (var value in values) batch.Records.Add(new Record { Value = ByteString.CopyFromUtf8(value) });
            return batch;
        }
        using var ahead = leader.Client.ProduceBatchAsync(Batch(2, "c", "d"), Timeout(60));
        // Without the hold it would be refused within this time (one Raft round); with it, it waits.
        await Task.Delay(TimeSpan.FromMilliseconds(500));
        Assert.False(ahead.ResponseAsync.IsCompleted, "the batch ahead of its predecessor was answered instead of held");
        Assert.Equal(0ul, (await leader.Client.ProduceBatchAsync(Batch(0, "a", "b"), Timeout(60))).BaseOffset);
        Assert.Equal(2ul, (await ahead).BaseOffset);
        var reference = await ReadAll(leader, "held", 4);
        Assert.Equal(["a", "b", "c", "d"], reference.Select(r => r.Value.ToStringUtf8()));
        foreach (var node in _nodes) Assert.Equal(reference, await ReadAll(node, "held", 4));
    }

    [Fact]
    public async Task Requests_queued_behind_an_entry_when_leadership_is_lost_answer_no_leader_and_only_the_proposed_one_leadership_lost()
    {
        // Slow elections: the leader steps down (a heartbeat round without a majority) well after
        // the queued requests reached it.
        var leader = await StartThree(new Dictionary<string, string> { ["CONDUIT__CLUSTER__LOWERELECTIONTIMEOUTMS"] = "1500", ["CONDUIT__CLUSTER__UPPERELECTIONTIMEOUTMS"] = "3000" });
        var followers = _nodes.Where(n => n != leader).ToList();
        foreach (var follower in followers) follower.Signal("STOP");
        try
        {
            // The first record's entry is proposed (in the leader's WAL: its last index moves)
            // and cannot be committed (no majority answers); the next ones wait behind it, never proposed.
            var before = await LastIndex(leader);
            var first = leader.Client.ProduceAsync(new ProduceRequest { Topic = "lost", Record = new Record { Value = ByteString.CopyFromUtf8("first") } }, Timeout(60)).ResponseAsync;
            while (await LastIndex(leader) == before) await Task.Delay(10); // GetServers has no wait for it
            var queued = Enumerable.Range(0, 5).Select(i => leader.Client.ProduceAsync(new ProduceRequest { Topic = "lost", Record = new Record { Value = ByteString.CopyFromUtf8($"q{i}") } }, Timeout(60)).ResponseAsync).ToList();
            var lost = await Assert.ThrowsAsync<RpcException>(() => first);
            Assert.Equal("LEADERSHIP_LOST", lost.GetDetail<Google.Rpc.ErrorInfo>()!.Reason);
            foreach (var call in queued)
            {
                var refused = await Assert.ThrowsAsync<RpcException>(() => call);
                // Nothing was proposed for them: a retry is safe, and the answer says so.
                Assert.Contains(refused.GetDetail<Google.Rpc.ErrorInfo>()!.Reason, new[] { "NO_LEADER", "NOT_LEADER" });
            }
            // They were refused from the queue (the leader's log counts them), not before it by a
            // leader that had stepped down already (that would test nothing here).
            int FromQueue() => System.Text.RegularExpressions.Regex.Matches(leader.Log, @"(\d+) queued append request\(s\) to topic 'lost' refused").Sum(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
            var waited = System.Diagnostics.Stopwatch.StartNew();
            while (FromQueue() < 5 && waited.Elapsed < TimeSpan.FromSeconds(30)) await Task.Delay(20); // the console logger writes on its own thread
            var fromQueue = FromQueue();
            Assert.True(fromQueue == 5, $"{fromQueue} of the 5 requests were refused from the queue; the leader's log:\n{leader.Log}");
        }
        finally
        {
            foreach (var follower in followers) follower.Signal("CONT");
        }
        // None of the refused records is in the log on any node (the proposed one may be).
        await WaitForLeader(_nodes, except: null);
        var mark = await ProduceWithRetry(_nodes, "after");
        foreach (var node in _nodes)
        {
            var records = await ReadAll(node, "", (int)mark.Offset + 1);
            Assert.Equal("after", records[^1].Value.ToStringUtf8());
        }
        foreach (var node in _nodes) Assert.DoesNotContain(await ReadTopicIfAny(node, "lost"), r => r.StartsWith('q'));
    }

    /// <summary>A topic's values on one node (none when the topic does not exist there).</summary>
    private static async Task<List<string>> ReadTopicIfAny(Node node, string topic)
    {
        var info = (await node.Admin.ListTopicsAsync(new ListTopicsRequest(), Timeout())).Topics.SingleOrDefault(t => t.Name == topic);
        if (info is null || info.NextOffset == 0) return [];
        return [.. (await ReadAll(node, topic, (int)info.NextOffset)).Select(r => r.Value.ToStringUtf8())];
    }
}
