using Conduit.Storage.Log;
using DotNext.IO.Log;
using DotNext.Net.Cluster.Consensus.Raft;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;
using Xunit.Abstractions;

namespace Conduit.Cluster.Tests;

/// <summary>
/// What a follower's WAL holds on disk when it answers AppendEntries. DotNext's follower appends
/// with <c>IAuditTrail&lt;IRaftLogEntry&gt;.AppendAsync(entries, index, skipCommitted: true)</c> and
/// then answers (RaftCluster.AppendEntriesAsync); a restart recovers the entries its checkpoint
/// covers (written by the flusher after it msyncs the pages). So the test appends as the follower
/// does and, at the moment the append returns, takes what a kill -9 would leave (the checkpoint
/// first, then the pages: the page cache survives a killed process) and opens a WAL on it.
/// </summary>
public class FsyncBeforeAckTests(ITestOutputHelper output)
{
    private const int Entries = 30;

    [Fact]
    public async Task A_followers_appended_entries_are_flushed_and_checkpointed_before_the_append_returns()
    {
        Assert.Equal(Entries, await RecoverableWhenAppendReturns((options, machine) => new FsyncBeforeAckLog(options, machine)));
    }

    [Fact]
    public async Task DotNexts_own_wal_returns_from_a_followers_append_before_its_checkpoint_covers_it()
    {
        // The behaviour FsyncBeforeAckLog exists for: if DotNext starts flushing before it
        // returns, this fails and the subclass can go.
        var recoverable = await RecoverableWhenAppendReturns((options, machine) => new WriteAheadLog(options, machine));
        output.WriteLine($"DotNext's WriteAheadLog: {recoverable} of {Entries} appends recoverable when the append returned");
        Assert.True(recoverable < Entries);
    }

    private const int Rounds = 5;

    /// <summary>How long the hook holds the follower's flusher between its msync and its checkpoint (a slow disk).</summary>
    private static readonly TimeSpan SlowCheckpoint = TimeSpan.FromMilliseconds(1000);

    [Fact]
    public async Task A_real_raft_followers_ack_waits_until_its_wal_would_recover_the_entry()
    {
        Assert.Equal(Rounds, await RecoverableOnTheFollowerAtCommit(fsyncBeforeAck: true, Rounds));
    }

    [Fact]
    public async Task With_dotnexts_own_wal_a_real_raft_follower_acks_before_its_wal_would_recover_the_entry()
    {
        // What keeps the test above honest: the same cluster with DotNext's WriteAheadLog (what
        // RaftLogNode builds with FsyncBeforeAck off) lets the leader commit entries the follower
        // would lose to a kill -9 at that moment.
        // Twice the rounds (they are quick here): a stalled machine may let the flusher finish before the copy now and then.
        var recoverable = await RecoverableOnTheFollowerAtCommit(fsyncBeforeAck: false, 2 * Rounds);
        output.WriteLine($"DotNext's WriteAheadLog: {recoverable} of {2 * Rounds} commits recoverable on the follower");
        Assert.True(recoverable < 2 * Rounds);
    }

    /// <summary>
    /// Two real <see cref="RaftLogNode"/>s of a three-member cluster (DotNext's RaftCluster over TCP
    /// on 127.0.0.1; the third member never starts), so each commit needs the follower's ack. A
    /// hook on DotNext's WAL metrics (its flusher counts the entries it flushed after the msync and
    /// before it writes the checkpoint a restart reads) holds the follower's flusher there for
    /// <see cref="SlowCheckpoint"/>, as a slow disk would. Each time the leader's replicate
    /// returns (the entry is committed: the follower acked it), the follower's WAL folder is
    /// copied as a kill -9 would leave it and opened: how many of <paramref name="rounds"/> committed
    /// entries that copy holds.
    /// </summary>
    private async Task<int> RecoverableOnTheFollowerAtCommit(bool fsyncBeforeAck, int rounds)
    {
        using var dir = new TempDir();
        var ports = new[] { Ports.Free(), Ports.Free(), Ports.Free() };
        var peers = string.Join(',', ports.Select((p, i) => $"n{i + 1}=127.0.0.1:{p}"));
        string? slowNode = null;
        using var hook = new System.Diagnostics.Metrics.MeterListener();
        hook.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == "DotNext.IO.WriteAheadLog" && instrument.Name == "entries-flush-count") listener.EnableMeasurementEvents(instrument);
        };
        hook.SetMeasurementEventCallback<long>((_, _, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == RaftLogNode.WalNodeTag && Equals(tag.Value, Volatile.Read(ref slowNode))) Thread.Sleep(SlowCheckpoint);
            }
        });
        hook.Start();

        var nodes = new List<(RaftLogNode Node, FileLogStorage Storage, string Wal)>();
        try
        {
            for (var i = 0; i < 2; i++)
            {
                var options = new ClusterOptions
                {
                    NodeId = $"n{i + 1}",
                    Address = $"127.0.0.1:{ports[i]}",
                    Peers = [peers],
                    // Elections well beyond a held flush (a follower may wait on one before it answers).
                    LowerElectionTimeoutMs = 5000,
                    UpperElectionTimeoutMs = 10_000,
                    RequestTimeoutMs = 20_000,
                    SnapshotEvery = 0,
                    FsyncBeforeAck = fsyncBeforeAck,
                };
                var storage = new FileLogStorage(Path.Combine(dir.Path, $"log{i + 1}"));
                var wal = Path.Combine(dir.Path, $"raft{i + 1}");
                nodes.Add((new RaftLogNode(options, $"127.0.0.1:{ports[i]}", wal, storage, Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance), storage, wal));
            }
            await Task.WhenAll(nodes.Select(n => n.Node.StartAsync(default)));
            var recoverable = 0;
            for (var (round, elections) = (0, 0); round < rounds; round++)
            {
                var leader = await LeaderOf(nodes.Select(n => n.Node).ToList());
                var follower = nodes.Single(n => n.Node != leader);
                Volatile.Write(ref slowNode, follower.Node.NodeId);
                var record = new LogRecord { TimestampMs = 1000, Value = new byte[100] };
                try
                {
                    await leader.ReplicateAsync(new LogCommand.Append("", [record]));
                }
                catch (LeadershipLostException) when (++elections <= 3)
                {
                    // A loaded machine may stall a node past an election timeout: that round is
                    // done again under the leader then (its follower held instead), not counted.
                    output.WriteLine($"round {round}: {leader.NodeId} lost the leadership; again");
                    round--;
                    continue;
                }
                var committed = leader.LocalProgress()!.Value.Progress.CommitIndex;
                var copy = Path.Combine(dir.Path, $"follower-after-{round}");
                await Snapshot(follower.Wal, copy);
                var reopened = new WriteAheadLog(new WriteAheadLog.Options { Location = copy, ChunkSize = 8 * 1024 * 1024 }, new NothingApplied());
                await using (reopened)
                {
                    output.WriteLine($"round {round}: committed {committed}, the follower's copy recovers up to {reopened.LastEntryIndex}");
                    if (reopened.LastEntryIndex >= committed) recoverable++;
                }
            }
            return recoverable;
        }
        finally
        {
            Volatile.Write(ref slowNode, null);
            foreach (var (node, storage, _) in nodes)
            {
                await node.DisposeAsync();
                storage.Dispose();
            }
        }
    }

    /// <summary>The node that leads and can write (its first entry of the term committed).</summary>
    private static async Task<RaftLogNode> LeaderOf(IReadOnlyList<RaftLogNode> nodes)
    {
        for (var deadline = System.Diagnostics.Stopwatch.StartNew(); ; await Task.Delay(50)) // DotNext raises no event when the leadership token becomes valid
        {
            if (nodes.FirstOrDefault(n => n.IsLeader) is { } leader) return leader;
            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(60), "no leader within 60 s");
        }
    }

    /// <summary>How many of <see cref="Entries"/> follower appends a restart taken at the moment each returned would recover.</summary>
    private static async Task<int> RecoverableWhenAppendReturns(Func<WriteAheadLog.Options, IStateMachine, WriteAheadLog> create)
    {
        using var dir = new TempDir();
        var live = Path.Combine(dir.Path, "live");
        var recoverable = 0;
        var wal = create(new WriteAheadLog.Options { Location = live, ChunkSize = 64 * 1024 }, new NothingApplied());
        await using (wal)
        {
            for (var index = 1L; index <= Entries; index++)
            {
                var entry = new BinaryLogEntry { Term = 1, Content = new byte[100] };
                await ((IAuditTrail<IRaftLogEntry>)wal).AppendAsync(new LogEntryProducer<BinaryLogEntry>([entry]), index, true, default);
                var copy = Path.Combine(dir.Path, $"after-{index}");
                await Snapshot(live, copy);
                var reopened = new WriteAheadLog(new WriteAheadLog.Options { Location = copy, ChunkSize = 64 * 1024 }, new NothingApplied());
                await using (reopened)
                {
                    if (reopened.LastEntryIndex == index) recoverable++;
                }
            }
        }
        return recoverable;
    }

    /// <summary>Copies a live WAL folder as a kill -9 would leave it: the checkpoint first (the pages only grow after it).</summary>
    private static async Task Snapshot(string from, string to)
    {
        Directory.CreateDirectory(to);
        await Copy(Path.Combine(from, "checkpoint"), Path.Combine(to, "checkpoint"));
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(to, Path.GetRelativePath(from, file));
            if (File.Exists(target)) continue;
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            await Copy(file, target);
        }
    }

    private static async Task Copy(string from, string to)
    {
        // The live WAL holds these files open (memory-mapped): share everything while reading.
        await using var source = new FileStream(from, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        await using var target = File.Create(to);
        await source.CopyToAsync(target);
    }

    private sealed class NothingApplied : IStateMachine
    {
        public ISnapshot? Snapshot => null;

        public ValueTask ReclaimGarbageAsync(long watermark, CancellationToken token) => ValueTask.CompletedTask;

        public ValueTask<long> ApplyAsync(LogEntry entry, CancellationToken token) => ValueTask.FromResult(entry.Index);
    }
}
