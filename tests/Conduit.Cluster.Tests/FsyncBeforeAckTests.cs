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

    internal sealed class NothingApplied : IStateMachine
    {
        public ISnapshot? Snapshot => null;

        public ValueTask ReclaimGarbageAsync(long watermark, CancellationToken token) => ValueTask.CompletedTask;

        public ValueTask<long> ApplyAsync(LogEntry entry, CancellationToken token) => ValueTask.FromResult(entry.Index);
    }
}
