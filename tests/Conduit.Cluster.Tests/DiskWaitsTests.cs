using DotNext.IO.Log;
using DotNext.Net.Cluster.Consensus.Raft;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;
using Microsoft.Extensions.Logging;

namespace Conduit.Cluster.Tests;

/// <summary>
/// The warning a node logs when its Raft log waits for the disk near the request or election
/// timeout (docs/cluster.md, "A slow disk"), and that DotNext's follower and leader paths are timed.
/// </summary>
public class DiskWaitsTests
{
    [Fact]
    public void A_wait_over_half_the_smaller_timeout_is_warned_once_a_minute_or_when_twice_as_long_with_a_count_and_the_longest()
    {
        var log = new Lines();
        var clock = new ManualClock();
        var waits = new DiskWaits(log, "n2", TimeSpan.FromMilliseconds(300), TimeSpan.FromMilliseconds(400), clock);
        Assert.Equal(TimeSpan.FromMilliseconds(150), waits.WarnAbove);

        waits.Observe(DiskWait.FollowerAppend, TimeSpan.FromMilliseconds(150)); // at the limit: no warning
        Assert.Empty(log.Warnings);
        waits.Observe(DiskWait.FollowerAppend, TimeSpan.FromMilliseconds(220));
        var first = Assert.Single(log.Warnings);
        Assert.Contains("n2", first, StringComparison.Ordinal);
        Assert.Contains("waited 220 ms", first, StringComparison.Ordinal);
        Assert.Contains("Conduit:Cluster:RequestTimeoutMs (300 ms", first, StringComparison.Ordinal);
        Assert.Contains("lower election timeout, 400 ms", first, StringComparison.Ordinal);

        // Within the minute: counted, not logged, unless twice the longest warned about.
        clock.Advance(TimeSpan.FromSeconds(30));
        waits.Observe(DiskWait.Commit, TimeSpan.FromMilliseconds(430));
        waits.Observe(DiskWait.Commit, TimeSpan.FromMilliseconds(400));
        Assert.Single(log.Warnings);
        waits.Observe(DiskWait.FollowerAppend, TimeSpan.FromMilliseconds(900)); // over 2 x 220: at once
        Assert.Equal(2, log.Warnings.Count);
        Assert.Contains("waited 900 ms", log.Warnings[1], StringComparison.Ordinal);
        Assert.Contains("3 waits over 150 ms since the last such warning, the longest 900 ms", log.Warnings[1], StringComparison.Ordinal);
        waits.Observe(DiskWait.Commit, TimeSpan.FromMilliseconds(1700)); // under 2 x 900: quiet
        Assert.Equal(2, log.Warnings.Count);

        clock.Advance(TimeSpan.FromSeconds(61));
        waits.Observe(DiskWait.Commit, TimeSpan.FromMilliseconds(300));
        Assert.Equal(3, log.Warnings.Count);
        Assert.Contains("waited 300 ms for the disk (a commit", log.Warnings[2], StringComparison.Ordinal);
        Assert.Contains("2 waits over 150 ms since the last such warning, the longest 1700 ms", log.Warnings[2], StringComparison.Ordinal);
        Assert.Equal(6, waits.Slow);
        Assert.Equal(TimeSpan.FromMilliseconds(1700), waits.Longest);
    }

    [Fact]
    public async Task A_followers_append_and_a_commit_through_DotNexts_interfaces_are_timed()
    {
        // DotNext's follower appends through IAuditTrail<IRaftLogEntry>.AppendAsync(producer, ...) and
        // both roles commit through IAuditTrail.CommitAsync (RaftCluster.AppendEntriesAsync,
        // LeaderState's heartbeat loop): the re-implemented members must be the ones reached.
        using var dir = new TempDir();
        var log = new Lines();
        // A request timeout of 0 ms makes every wait "slow", so each timed wait shows in the count.
        var waits = new DiskWaits(log, "n1", TimeSpan.Zero, TimeSpan.FromMilliseconds(300));
        var options = new WriteAheadLog.Options { Location = Path.Combine(dir.Path, "f"), ChunkSize = 64 * 1024 };
        await using (var follower = new FsyncBeforeAckLog(options, new FsyncBeforeAckTests.NothingApplied(), waits))
        {
            var entry = new BinaryLogEntry { Term = 1, Content = new byte[100] };
            await ((IAuditTrail<IRaftLogEntry>)follower).AppendAsync(new LogEntryProducer<BinaryLogEntry>([entry]), 1, true, default);
            Assert.Equal(1, waits.Slow);
            await ((IAuditTrail)follower).CommitAsync(1, default);
            Assert.Equal(2, waits.Slow);
        }
        var leaderOptions = new WriteAheadLog.Options { Location = Path.Combine(dir.Path, "l"), ChunkSize = 64 * 1024 };
        await using (var leader = new WatchedWriteAheadLog(leaderOptions, new FsyncBeforeAckTests.NothingApplied(), waits))
        {
            await leader.AppendAsync(new BinaryLogEntry { Term = 1, Content = new byte[100] });
            await ((IAuditTrail)leader).CommitAsync(1, default);
            Assert.Equal(3, waits.Slow);
        }
        Assert.Contains("a follower's flush of the entries it received, before it answers", log.Warnings[0], StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_followers_wait_is_the_flush_only_not_the_entries_arriving_from_the_network()
    {
        // DotNext's follower appends as it reads the entries from the TCP stream: a leader or a
        // network that is slow to deliver them is no disk wait.
        using var dir = new TempDir();
        var waits = new DiskWaits(new Lines(), "n1", TimeSpan.Zero, TimeSpan.FromMilliseconds(300));
        var options = new WriteAheadLog.Options { Location = dir.Path, ChunkSize = 64 * 1024 };
        await using var follower = new FsyncBeforeAckLog(options, new FsyncBeforeAckTests.NothingApplied(), waits);
        var arriving = TimeSpan.FromSeconds(3);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        await ((IAuditTrail<IRaftLogEntry>)follower).AppendAsync(new SlowProducer(new BinaryLogEntry { Term = 1, Content = new byte[100] }, arriving), 1, true, default);
        Assert.True(clock.Elapsed >= arriving);
        Assert.Equal(1, waits.Slow);
        Assert.True(waits.Longest < arriving, $"{waits.Longest.TotalMilliseconds} ms counted as the disk's");
    }

    /// <summary>One entry that arrives after <paramref name="delay"/>, as from a slow network.</summary>
    private sealed class SlowProducer(BinaryLogEntry entry, TimeSpan delay) : ILogEntryProducer<BinaryLogEntry>
    {
        private bool _done;

        public BinaryLogEntry Current => entry;

        public long RemainingCount => _done ? 0 : 1;

        public async ValueTask<bool> MoveNextAsync()
        {
            if (_done) return false;
            await Task.Delay(delay);
            _done = true;
            return true;
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    private sealed class ManualClock : TimeProvider
    {
        private long _ticks = 1;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => _ticks;

        public void Advance(TimeSpan by) => _ticks += by.Ticks;
    }

    private sealed class Lines : ILogger
    {
        public List<string> Warnings { get; } = [];

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel == LogLevel.Warning) lock (Warnings) Warnings.Add(formatter(state, exception));
        }
    }
}
