using System.Diagnostics;
using DotNext.IO.Log;
using DotNext.Net.Cluster.Consensus.Raft;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;
using Microsoft.Extensions.Logging;

namespace Conduit.Cluster;

/// <summary>Where this node's Raft timing waits for its disk (<see cref="DiskWaits"/>).</summary>
public enum DiskWait
{
    /// <summary>A follower's flush with FsyncBeforeAck: its AppendEntries answer waits for it (the append before, which reads the entries from the network, is not timed).</summary>
    FollowerAppend,

    /// <summary>A commit: the leader's (inside DotNext's heartbeat loop, which sends nothing while it waits) or a follower's (inside its answer).</summary>
    Commit,
}

/// <summary>
/// How long this node's Raft log waited for its disk where the cluster's timing depends on it, and a
/// warning when that nears the request or election timeout (docs/cluster.md, "A slow disk"). DotNext
/// 6.12 gives a follower's answer <c>RequestTimeoutMs</c> (the leader gives up and counts the follower
/// unavailable; with two of three unavailable it steps down) and a leader's heartbeat loop waits for
/// the leader's own flush before its next round (past the followers' election timeout they elect).
/// Warns when one wait exceeds half the smaller of the two, at most once a minute (sooner for a wait
/// twice the longest warned about), with how many such waits there were and the longest.
/// </summary>
public sealed class DiskWaits(ILogger logger, string nodeId, TimeSpan requestTimeout, TimeSpan lowerElectionTimeout, TimeProvider? clock = null)
{
    private static readonly TimeSpan Quiet = TimeSpan.FromMinutes(1);
    private readonly TimeProvider _clock = clock ?? TimeProvider.System;
    private readonly Lock _lock = new();
    private long _lastWarning = long.MinValue, _over;
    private TimeSpan _longest, _warned;

    /// <summary>A wait longer than this is warned about.</summary>
    public TimeSpan WarnAbove { get; } = (requestTimeout < lowerElectionTimeout ? requestTimeout : lowerElectionTimeout) / 2;

    /// <summary>Waits over <see cref="WarnAbove"/> since this node started.</summary>
    public long Slow => Interlocked.Read(ref _slowTotal);

    private long _slowTotal;

    /// <summary>The longest wait seen since this node started.</summary>
    public TimeSpan Longest { get; private set; }

    public void Observe(DiskWait kind, TimeSpan took)
    {
        if (took <= WarnAbove)
        {
            if (took > Longest) lock (_lock) if (took > Longest) Longest = took;
            return;
        }
        long count;
        TimeSpan longest;
        lock (_lock)
        {
            if (took > Longest) Longest = took;
            _slowTotal++;
            _over++;
            if (took > _longest) _longest = took;
            var now = _clock.GetTimestamp();
            // Quiet for a minute after a warning, unless a wait is twice the longest warned about
            // (a node's first flushes at start are often slow; the disk turning slow later must still show).
            if (_lastWarning != long.MinValue && _clock.GetElapsedTime(_lastWarning, now) < Quiet && took < 2 * _warned) return;
            _lastWarning = now;
            if (took > _warned) _warned = took;
            (count, longest, _over, _longest) = (_over, _longest, 0, TimeSpan.Zero);
        }
        logger.LogWarning(
            "Node {Node}: the Raft log waited {Took} ms for the disk ({Wait}); {Count} waits over {Limit} ms since the last such warning, the longest {Longest} ms. " +
            "A follower's answer must reach the leader within Conduit:Cluster:RequestTimeoutMs ({RequestTimeout} ms; else the leader counts it unavailable, and without a majority steps down) " +
            "and a leader's heartbeats wait for its own flush (past the lower election timeout, {Election} ms, the followers elect another): " +
            "put the data folder on a disk whose fsync stays well under both, or raise both on every node (docs/cluster.md, A slow disk)",
            nodeId, (long)took.TotalMilliseconds, kind == DiskWait.FollowerAppend ? "a follower's flush of the entries it received, before it answers" : "a commit, after the flush of the entries",
            count, (long)WarnAbove.TotalMilliseconds, (long)longest.TotalMilliseconds, (long)requestTimeout.TotalMilliseconds, (long)lowerElectionTimeout.TotalMilliseconds);
    }
}

/// <summary>
/// DotNext's <see cref="WriteAheadLog"/> with its commits timed for <see cref="DiskWaits"/>: both
/// DotNext's leader (heartbeat loop) and follower (AppendEntries) commit through
/// <c>IAuditTrail.CommitAsync</c>, which waits for the WAL's flush of the entries (interface
/// re-implementation, as <see cref="FsyncBeforeAckLog"/>).
/// </summary>
internal class WatchedWriteAheadLog(WriteAheadLog.Options options, IStateMachine stateMachine, DiskWaits? waits = null)
    : WriteAheadLog(options, stateMachine), IAuditTrail
{
    protected DiskWaits? Waits => waits;

    async ValueTask<long> IAuditTrail.CommitAsync(long endIndex, CancellationToken token)
    {
        var start = Stopwatch.GetTimestamp();
        try
        {
            return await CommitAsync(endIndex, token).ConfigureAwait(false);
        }
        finally
        {
            // Also when cancelled: a follower's answer given up at the request timeout is the case to warn about.
            waits?.Observe(DiskWait.Commit, Stopwatch.GetElapsedTime(start));
        }
    }
}
