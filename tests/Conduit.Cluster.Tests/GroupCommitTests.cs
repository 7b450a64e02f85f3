using System.Diagnostics;
using System.Text;
using Conduit.Storage.Log;
using Microsoft.Extensions.Logging.Abstractions;

namespace Conduit.Cluster.Tests;

/// <summary>
/// The leader's write path in this process, on a Raft node of its own (a cluster of one, real
/// DotNext WAL and election): the group commit of appends and the InitProducer gates.
/// </summary>
public sealed class GroupCommitTests : IAsyncLifetime
{
    private readonly TempDir _dir = new("conduit-group-");
    private ReplicatedLogStorage _storage = null!;

    public async Task InitializeAsync()
    {
        var options = new ClusterOptions { NodeId = "n1", Address = $"127.0.0.1:{Ports.Free()}", LowerElectionTimeoutMs = 150, UpperElectionTimeoutMs = 300 };
        var local = new FileLogStorage(Path.Combine(_dir.Path, "log"));
        var node = new RaftLogNode(options, "127.0.0.1:1", Path.Combine(_dir.Path, "raft"), local, NullLoggerFactory.Instance);
        _storage = new ReplicatedLogStorage(local, node);
        await node.StartAsync(CancellationToken.None);
        // Elected, and its first entry of the term committed (until then a write answers NOT_LEADER).
        var clock = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                await _storage.GetOrCreate("warm-up").Append(new LogRecord { Value = "w"u8.ToArray() }).DurableOffsetAsync();
                return;
            }
            catch (NotLeaderException) when (clock.Elapsed < TimeSpan.FromSeconds(30))
            {
                await Task.Delay(50); // an election has no event a caller of the storage can await
            }
        }
    }

    public Task DisposeAsync()
    {
        _storage.Dispose();
        _dir.Dispose();
        return Task.CompletedTask;
    }

    [Fact]
    public async Task Appends_issued_while_an_entry_is_in_flight_share_entries_and_keep_their_order()
    {
        var topic = _storage.GetOrCreate("t");
        var before = _storage.Node.AppliedIndex;
        // As a ProduceStream issues them: one after another, without waiting for the answers;
        // some single records, some batches (a batch is never split).
        var pending = new List<(PendingAppend Pending, int Count)>();
        var next = 0;
        for (var i = 0; i < 500; i++)
        {
            var count = i % 10 == 0 ? 3 : 1;
            var records = Enumerable.Range(next, count).Select(n => new LogRecord { Value = Encoding.UTF8.GetBytes($"r{n}") }).ToArray();
            pending.Add((count == 1 ? topic.Append(records[0]) : topic.AppendBatch(records), count));
            next += count;
        }
        long expected = 0;
        foreach (var (append, count) in pending)
        {
            Assert.Equal(expected, await append.DurableOffsetAsync());
            expected += count;
        }
        for (var n = 0; n < next; n++) Assert.Equal($"r{n}", Encoding.UTF8.GetString(topic.Read(n).Value.Span));
        var entries = _storage.Node.AppliedIndex - before;
        Assert.True(entries < 500 / 4, $"500 requests took {entries} entries");
    }

    [Fact]
    public async Task An_entry_holds_at_most_the_record_cap_and_a_request_over_the_byte_cap_goes_alone()
    {
        var topic = _storage.GetOrCreate("caps");
        var before = _storage.Node.AppliedIndex;
        var many = Enumerable.Range(0, AppendProposer.MaxEntryRecords * 3).Select(_ => topic.Append(new LogRecord { Value = "x"u8.ToArray() })).ToList();
        for (var i = 0; i < many.Count; i++) Assert.Equal(i, await many[i].DurableOffsetAsync());
        // Three times the cap: at least three entries (more when the first went before the rest were queued).
        Assert.True(_storage.Node.AppliedIndex - before >= 3, $"{many.Count} records in {_storage.Node.AppliedIndex - before} entries");

        before = _storage.Node.AppliedIndex;
        var large = new byte[AppendProposer.MaxEntryBytes / 2];
        var three = Enumerable.Range(0, 3).Select(_ => topic.Append(new LogRecord { Value = large })).ToList();
        foreach (var append in three) await append.DurableOffsetAsync();
        // Two halves never fit with their overhead: three entries.
        Assert.Equal(3, _storage.Node.AppliedIndex - before);
    }

    /// <summary>A proposer on this node whose first entry waits for <paramref name="release"/> before it is proposed (an entry in flight).</summary>
    private AppendProposer HeldProposer(Task release, long maxQueuedBytes = AppendProposer.MaxQueuedBytes, bool groupCommit = true)
    {
        var first = 1;
        return new AppendProposer(async (command, outcome) =>
        {
            if (Interlocked.Exchange(ref first, 0) == 1) await release;
            await _storage.Node.ReplicateAsync(command, outcome: outcome);
        }, maxQueuedBytes, groupCommit);
    }

    private static LogRecord[] Records(string value) => [new LogRecord { Value = Encoding.UTF8.GetBytes(value), TimestampMs = 1 }];

    [Fact]
    public async Task A_request_cancelled_while_queued_is_never_proposed_and_its_caller_sees_the_cancellation()
    {
        var release = new TaskCompletionSource();
        var proposer = HeldProposer(release.Task);
        var inFlight = proposer.Propose("cancel", Records("first"));
        await WaitUntil(() => proposer.Queued("cancel") == 0); // taken: the entry in flight
        using var cts = new CancellationTokenSource();
        var queued = proposer.Propose("cancel", Records("cancelled"), cts.Token);
        var after = proposer.Propose("cancel", Records("after"));
        Assert.Equal(2, proposer.Queued("cancel"));
        await cts.CancelAsync();
        // Answered at once, while the entry ahead of it is still held.
        var cancelled = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => queued.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(cts.Token, cancelled.CancellationToken);
        Assert.Equal(1, proposer.Queued("cancel"));
        Assert.False(inFlight.IsCompleted);
        release.SetResult();
        Assert.Equal(0, await Durable(inFlight));
        Assert.Equal(1, await Durable(after));
        var topic = _storage.Find("cancel")!;
        Assert.Equal(2, topic.NextOffset);
        Assert.Equal(["first", "after"], Enumerable.Range(0, 2).Select(i => Encoding.UTF8.GetString(topic.Read(i).Value.Span)));

        // Once taken into an entry, a cancellation changes nothing: the records are applied.
        using var late = new CancellationTokenSource();
        var taken = proposer.Propose("cancel", Records("taken"), late.Token);
        await WaitUntil(() => proposer.Queued("cancel") == 0);
        await late.CancelAsync();
        Assert.Equal(2, await Durable(taken));

        // The storage's append path takes the call's token down to the proposer.
        var storageTopic = _storage.GetOrCreate("cancel");
        Assert.ThrowsAny<OperationCanceledException>(() => storageTopic.Append(new LogRecord { Value = "x"u8.ToArray() }, late.Token));
        Assert.Equal(3, storageTopic.NextOffset);
    }

    [Fact]
    public async Task A_request_over_the_topic_queue_cap_is_refused_at_once_and_never_proposed()
    {
        var release = new TaskCompletionSource();
        var proposer = HeldProposer(release.Task, maxQueuedBytes: 1000);
        var inFlight = proposer.Propose("full", [new LogRecord { Value = new byte[2000], TimestampMs = 1 }]);
        await WaitUntil(() => proposer.Queued("full") == 0); // taken: in flight, no longer counted
        var queued = proposer.Propose("full", [new LogRecord { Value = new byte[600], TimestampMs = 1 }]);
        var refused = Assert.Throws<AppendQueueFullException>(() => { _ = proposer.Propose("full", [new LogRecord { Value = new byte[600], TimestampMs = 1 }]); }); // thrown at once, not in the task
        Assert.Equal("full", refused.Topic);
        // Another topic has its own queue.
        var other = proposer.Propose("other", Records("o"));
        release.SetResult();
        Assert.Equal(0, await Durable(inFlight));
        Assert.Equal(1, await Durable(queued));
        Assert.Equal(0, await Durable(other));
        Assert.Equal(2, _storage.Find("full")!.NextOffset);
        // Room again once the queue drained; a request larger than the cap alone still goes.
        Assert.Equal(2, await Durable(proposer.Propose("full", [new LogRecord { Value = new byte[5000], TimestampMs = 1 }])));
    }

    [Fact]
    public async Task With_group_commit_off_each_queued_request_is_its_own_entry_in_arrival_order()
    {
        var release = new TaskCompletionSource();
        var proposer = HeldProposer(release.Task, groupCommit: false);
        var before = _storage.Node.AppliedIndex;
        var first = proposer.Propose("single", Records("r0"));
        await WaitUntil(() => proposer.Queued("single") == 0);
        var queued = Enumerable.Range(1, 5).Select(i => proposer.Propose("single", Records($"r{i}"))).ToList();
        Assert.Equal(5, proposer.Queued("single"));
        release.SetResult();
        Assert.Equal(0, await Durable(first));
        for (var i = 0; i < queued.Count; i++) Assert.Equal(i + 1, await Durable(queued[i]));
        // Six requests, six entries (with group commit the five queued ones share one).
        Assert.Equal(6, _storage.Node.AppliedIndex - before);
        var topic = _storage.Find("single")!;
        Assert.Equal(Enumerable.Range(0, 6).Select(i => $"r{i}"), Enumerable.Range(0, 6).Select(i => Encoding.UTF8.GetString(topic.Read(i).Value.Span)));
    }

    /// <summary>The offset of an append once it is applied and durable here (readers see it).</summary>
    private static async Task<long> Durable(Task<(PendingAppend Pending, ITopicLog? Topic)> applied)
    {
        var (pending, _) = await applied.WaitAsync(TimeSpan.FromSeconds(30));
        await pending.Durable.WaitAsync(TimeSpan.FromSeconds(30));
        return pending.Offset;
    }

    private static async Task WaitUntil(Func<bool> condition)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), "condition not met in 30 s");
            await Task.Delay(5);
        }
    }

    [Fact]
    public async Task InitProducer_waits_only_for_a_call_of_the_same_topic_and_producer()
    {
        var topic = _storage.GetOrCreate("p");
        var held = await _storage.ProducerGates.EnterAsync(("p", 1), CancellationToken.None);
        var same = topic.NextProducerEpochAsync(1, CancellationToken.None);
        // Another producer (and the same id in another topic) is not held up by producer 1's call.
        Assert.Equal(0, await topic.NextProducerEpochAsync(2, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(0, await _storage.GetOrCreate("q").NextProducerEpochAsync(1, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.False(same.IsCompleted);
        held.Dispose();
        Assert.Equal(0, await same.WaitAsync(TimeSpan.FromSeconds(30)));

        // Many calls at once, for one producer and for others: each producer's epochs are unique and dense.
        var calls = Enumerable.Range(0, 40).Select(i => (Id: 10L + (i % 4), Epoch: topic.NextProducerEpochAsync(10 + (i % 4), CancellationToken.None))).ToList();
        await Task.WhenAll(calls.Select(c => c.Epoch));
        foreach (var group in calls.GroupBy(c => c.Id)) Assert.Equal(Enumerable.Range(0, 10), group.Select(c => c.Epoch.Result).Order());
        Assert.Equal(0, _storage.ProducerGates.Count);
    }
}
