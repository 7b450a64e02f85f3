using Conduit.Storage.Log;
using Microsoft.Extensions.Logging.Abstractions;

namespace Conduit.Cluster.Tests;

/// <summary>The apply side without Raft: what a node does with committed entries, and with the same entries replayed after a restart.</summary>
public class StateMachineTests
{
    private static LogCommand.Append Append(string topic, params string[] values) =>
        new(topic, [.. values.Select(v => new LogRecord { TimestampMs = 1000, Value = System.Text.Encoding.UTF8.GetBytes(v) })]);

    private static LogCommand[] Entries() =>
    [
        Append("", "a", "b"),
        new LogCommand.CreateTopic("orders", new TopicConfig { Durability = Durability.Never }),
        Append("orders", "o1"),
        Append("", "c"),
        Append("orders", "o2", "o3", "o4"),
    ];

    [Fact]
    public async Task Replaying_applied_entries_after_a_restart_changes_nothing_and_the_next_entry_gets_the_next_offset()
    {
        using var dir = new TempDir();
        using (var storage = new FileLogStorage(dir.Path))
        {
            var machine = new LogStateMachine(storage, NullLogger.Instance);
            var offsets = new List<long>();
            foreach (var entry in Entries())
            {
                var outcome = new ApplyOutcome();
                await machine.ApplyAsync(entry, outcome, default);
                var (pending, _) = await outcome.Task;
                await pending.Durable;
                offsets.Add(pending.Offset);
            }
            Assert.Equal([0L, 0, 0, 2, 1], offsets);
        }
        using (var storage = new FileLogStorage(dir.Path))
        {
            // The WAL applies every committed entry again from the first (no snapshot).
            var machine = new LogStateMachine(storage, NullLogger.Instance);
            foreach (var entry in Entries()) await machine.ApplyAsync(entry, null, default);
            Assert.Equal(3, storage.Find("")!.NextOffset);
            Assert.Equal(4, storage.Find("orders")!.NextOffset);
            var outcome = new ApplyOutcome();
            await machine.ApplyAsync(Append("orders", "o5"), outcome, default);
            Assert.Equal(4, (await outcome.Task).Pending.Offset);
            Assert.Equal("o5", System.Text.Encoding.UTF8.GetString(storage.Find("orders")!.Read(4).Value.Span));
        }
    }

    [Fact]
    public async Task An_idempotent_producers_record_committed_twice_is_applied_once_at_its_first_offset()
    {
        // A client retried after LEADERSHIP_LOST and both entries were committed: every node's
        // apply must keep one record and answer the retry with the first offset.
        // A gap (sequence 5) is refused alike on every node and changes nothing; after a restart
        // the replay of all of it (no snapshot) changes nothing and the next record follows.
        using var dir = new TempDir();
        LogCommand.Append Produced(long sequence, string value) =>
            new("", [new LogRecord { TimestampMs = 1000, ProducerId = 42, ProducerEpoch = 0, Sequence = sequence, Value = System.Text.Encoding.UTF8.GetBytes(value) }]);
        LogCommand[] entries = [Produced(0, "a"), Produced(1, "b"), Produced(1, "b"), Produced(5, "gap"), Produced(2, "c"), new LogCommand.Append("", [new LogRecord { TimestampMs = 1000, Value = "plain"u8.ToArray() }])];
        using (var storage = new FileLogStorage(dir.Path))
        {
            var machine = new LogStateMachine(storage, NullLogger.Instance);
            var offsets = new List<long>();
            foreach (var entry in entries)
            {
                var outcome = new ApplyOutcome();
                await machine.ApplyAsync(entry, outcome, default);
                try
                {
                    offsets.Add(await (await outcome.Task).Pending.DurableOffsetAsync());
                }
                catch (OutOfOrderSequenceException)
                {
                    offsets.Add(-1);
                }
            }
            Assert.Equal([0L, 1, 1, -1, 2, 3], offsets);
            Assert.Equal(4, storage.Find("")!.NextOffset);
        }
        using (var storage = new FileLogStorage(dir.Path))
        {
            var machine = new LogStateMachine(storage, NullLogger.Instance);
            foreach (var entry in entries) await machine.ApplyAsync(entry, null, default);
            var outcome = new ApplyOutcome();
            await machine.ApplyAsync(Produced(3, "d"), outcome, default);
            Assert.Equal(4, await (await outcome.Task).Pending.DurableOffsetAsync());
            Assert.Equal(5, storage.Find("")!.NextOffset);
        }
    }

    [Fact]
    public async Task An_InitProducer_entry_registers_its_epoch_alike_on_every_node_fences_at_once_and_a_replay_changes_nothing()
    {
        // The epoch is in the entry (the leader chose it); every node's apply registers it, so a
        // later leader knows it. The same epoch proposed twice (two leaders, one after the other,
        // before the first's entry was applied) is refused the second time, alike on every node.
        using var dir = new TempDir();
        LogCommand.Append Produced(int epoch, long sequence) =>
            new("p", [new LogRecord { TimestampMs = 1000, ProducerId = 42, ProducerEpoch = epoch, Sequence = sequence, Value = "x"u8.ToArray() }]);
        LogCommand[] entries =
        [
            new LogCommand.InitProducer("p", 42, 0, 1000),
            Produced(0, 0),
            new LogCommand.InitProducer("p", 42, 1, 2000),
            new LogCommand.InitProducer("p", 42, 1, 2000),
            Produced(0, 1),
        ];
        async Task<string> Apply(LogStateMachine machine, LogCommand entry)
        {
            var outcome = new ApplyOutcome();
            await machine.ApplyAsync(entry, outcome, default);
            try
            {
                return (await (await outcome.Task).Pending.DurableOffsetAsync()).ToString(System.Globalization.CultureInfo.InvariantCulture);
            }
            catch (Exception ex)
            {
                return ex.GetType().Name;
            }
        }
        using (var storage = new FileLogStorage(dir.Path))
        {
            var machine = new LogStateMachine(storage, NullLogger.Instance);
            var answers = new List<string>();
            foreach (var entry in entries) answers.Add(await Apply(machine, entry));
            Assert.Equal(["0", "0", "1", nameof(ProducerEpochTakenException), nameof(ProducerFencedException)], answers);
            Assert.Equal(1, storage.Find("p")!.ProducerEpoch(42));
        }
        using (var storage = new FileLogStorage(dir.Path))
        {
            var machine = new LogStateMachine(storage, NullLogger.Instance);
            foreach (var entry in entries) await machine.ApplyAsync(entry, null, default);
            Assert.Equal(1, storage.Find("p")!.ProducerEpoch(42));
            Assert.Equal(1, storage.Find("p")!.NextOffset);
            Assert.Equal(nameof(ProducerFencedException), await Apply(machine, Produced(0, 1)));
            Assert.Equal("1", await Apply(machine, Produced(1, 0)));
        }
    }

    [Fact]
    public async Task A_replay_after_truncation_tells_a_committed_retry_by_the_producer_state_not_by_the_removed_record()
    {
        // Segments of 1 KiB hold a few 300-byte records: the retry's offset is truncated away
        // before the restart, so only the producer state can say the retry added nothing.
        using var dir = new TempDir();
        var value = new string('v', 300);
        LogCommand.Append Produced(long sequence) =>
            new("t", [new LogRecord { TimestampMs = 1000, ProducerId = 7, ProducerEpoch = 0, Sequence = sequence, Value = System.Text.Encoding.UTF8.GetBytes(value) }]);
        var entries = new List<LogCommand> { new LogCommand.CreateTopic("t", new TopicConfig { SegmentBytes = 1024 }), Produced(0), Produced(1), Produced(1) };
        for (var i = 2; i < 12; i++) entries.Add(Produced(i));
        using (var storage = new FileLogStorage(dir.Path))
        {
            var machine = new LogStateMachine(storage, NullLogger.Instance);
            foreach (var entry in entries)
            {
                var applied = new ApplyOutcome();
                await machine.ApplyAsync(entry, applied, default);
                await (await applied.Task).Pending.Durable;
            }
            Assert.Equal(12, storage.Find("t")!.NextOffset);
            var truncate = new LogCommand.Truncate("t", 6);
            entries.Add(truncate);
            await machine.ApplyAsync(truncate, null, default);
            Assert.True(storage.Find("t")!.FirstOffset > 1);
        }
        using (var storage = new FileLogStorage(dir.Path))
        {
            var machine = new LogStateMachine(storage, NullLogger.Instance);
            foreach (var entry in entries) await machine.ApplyAsync(entry, null, default);
            var outcome = new ApplyOutcome();
            await machine.ApplyAsync(Produced(12), outcome, default);
            Assert.Equal(12, await (await outcome.Task).Pending.DurableOffsetAsync());
            Assert.Equal(13, storage.Find("t")!.NextOffset);
        }
    }

    [Fact]
    public async Task A_node_whose_files_do_not_match_the_replicated_log_stops_instead_of_giving_other_offsets()
    {
        using var dir = new TempDir();
        using var storage = new FileLogStorage(dir.Path);
        var machine = new LogStateMachine(storage, NullLogger.Instance);
        // A record the replicated log never had (say, a data folder of a single node reused).
        await storage.GetOrCreate("").AppendBatch([new LogRecord { Value = "stray"u8.ToArray() }]).Durable;
        var outcome = new ApplyOutcome();
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await machine.ApplyAsync(Append("", "a", "b"), outcome, default));
        await Assert.ThrowsAsync<InvalidOperationException>(() => outcome.Task);
        Assert.Equal(1, storage.Find("")!.NextOffset);
    }

    [Fact]
    public async Task Truncation_replayed_later_never_reaches_records_appended_after_it_was_committed()
    {
        using var dir = new TempDir();
        var settings = new TopicSettings { SegmentBytes = TopicSettings.MinSegmentBytes };
        var storage = new FileLogStorage(dir.Path, settings);
        var machine = new LogStateMachine(storage, NullLogger.Instance);
        var big = new string('x', 600); // one record per 1 KiB segment
        LogCommand[] entries = [Append("", big), Append("", big), new LogCommand.Truncate("", long.MaxValue), Append("", big), Append("", big), Append("", big)];
        foreach (var entry in entries.Take(3)) await machine.ApplyAsync(entry, null, default);
        var first = storage.Find("")!.FirstOffset;
        Assert.Equal(1, first); // the sealed segment went, never the active one
        foreach (var entry in entries.Skip(3)) await machine.ApplyAsync(entry, null, default);
        // A restart replays every entry: the truncation must not now reach the later records.
        storage.Dispose();
        using var reopened = new FileLogStorage(dir.Path, settings);
        var replay = new LogStateMachine(reopened, NullLogger.Instance);
        foreach (var entry in entries) await replay.ApplyAsync(entry, null, default);
        // Segment boundaries are each node's own (a segment that was active then may be sealed now),
        // so how far back a node keeps records may differ; the offsets the truncation did not name stay.
        Assert.InRange(reopened.Find("")!.FirstOffset, first, 2);
        Assert.Equal(5, reopened.Find("")!.NextOffset);
        for (var offset = 2; offset < 5; offset++) Assert.Equal(offset, reopened.Find("")!.Read(offset).Offset);
    }

    [Fact]
    public async Task An_entry_of_merged_requests_answers_each_as_its_own_entry_would_and_a_replay_changes_nothing()
    {
        // The leader's group commit puts several produce requests in one entry: plain records, an
        // idempotent producer's records, its retry, a gap, a batch. Each is answered alone, as
        // when each was an entry (An_idempotent_producers_record_committed_twice_...).
        using var dir = new TempDir();
        LogRecord Record(string value, long sequence = -1) => sequence < 0
            ? new LogRecord { TimestampMs = 1000, Value = System.Text.Encoding.UTF8.GetBytes(value) }
            : new LogRecord { TimestampMs = 1000, ProducerId = 42, ProducerEpoch = 0, Sequence = sequence, Value = System.Text.Encoding.UTF8.GetBytes(value) };
        LogCommand[] entries =
        [
            new LogCommand.AppendBatches("", [[Record("plain")], [Record("a", 0)], [Record("a", 0)], [Record("gap", 5)], [Record("b", 1), Record("c", 2)], [Record("plain2")]]),
            new LogCommand.AppendBatches("", [[Record("b", 1), Record("c", 2)], [Record("d", 3)]]),
        ];
        async Task<List<string>> Apply(LogStateMachine machine, LogCommand.AppendBatches entry)
        {
            var parts = entry.Batches.Select(_ => new ApplyOutcome()).ToArray();
            var outcome = new ApplyOutcome(parts);
            await machine.ApplyAsync(entry, outcome, default);
            await outcome.Task;
            var answers = new List<string>();
            foreach (var part in parts)
            {
                try
                {
                    answers.Add((await (await part.Task).Pending.DurableOffsetAsync()).ToString(System.Globalization.CultureInfo.InvariantCulture));
                }
                catch (Exception ex)
                {
                    answers.Add(ex.GetType().Name);
                }
            }
            return answers;
        }
        using (var storage = new FileLogStorage(dir.Path))
        {
            var machine = new LogStateMachine(storage, NullLogger.Instance);
            Assert.Equal(["0", "1", "1", nameof(OutOfOrderSequenceException), "2", "4"], await Apply(machine, (LogCommand.AppendBatches)entries[0]));
            Assert.Equal(["2", "5"], await Apply(machine, (LogCommand.AppendBatches)entries[1]));
            Assert.Equal(["plain", "a", "b", "c", "plain2", "d"], Enumerable.Range(0, 6).Select(o => System.Text.Encoding.UTF8.GetString(storage.Find("")!.Read(o).Value.Span)));
        }
        using (var storage = new FileLogStorage(dir.Path))
        {
            // A restart replays both entries (no snapshot): nothing is added; the next record follows.
            var machine = new LogStateMachine(storage, NullLogger.Instance);
            foreach (var entry in entries) await machine.ApplyAsync(entry, null, default);
            Assert.Equal(6, storage.Find("")!.NextOffset);
            Assert.Equal(["6"], await Apply(machine, new LogCommand.AppendBatches("", [[Record("e", 4)]])));
        }
    }
}
