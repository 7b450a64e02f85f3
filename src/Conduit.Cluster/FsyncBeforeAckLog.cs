using System.Diagnostics;
using DotNext.IO.Log;
using DotNext.Net.Cluster.Consensus.Raft;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;

namespace Conduit.Cluster;

/// <summary>
/// DotNext's <see cref="WriteAheadLog"/>, except that entries a follower receives are on disk
/// before it answers AppendEntries. DotNext 6.12's follower (RaftCluster.AppendEntriesAsync)
/// calls <c>IAuditTrail&lt;IRaftLogEntry&gt;.AppendAsync(entries, prevLogIndex + 1, true, token)</c>,
/// then <c>CommitAsync(leader's commit index)</c>, then answers; the append only wakes the WAL's
/// background flusher, and the commit waits for the flush of entries up to the leader's commit
/// index only, so the entries of this very request are acknowledged from memory. Here that
/// append also waits for <see cref="WriteAheadLog.FlushAsync(CancellationToken)"/>: the
/// flusher msyncs every page up to the last entry and writes its checkpoint (commit index, last
/// index; a write-through file), which is what a restart reads back. With the leader's own copy
/// (its commit waits for its flush), an entry is committed only once it is fsynced on a majority.
/// </summary>
/// <remarks>
/// Interface re-implementation (C#: a derived class listing the interface again re-maps only the
/// members it declares), not a fork: the other members stay DotNext's.
/// </remarks>
internal sealed class FsyncBeforeAckLog(WriteAheadLog.Options options, IStateMachine stateMachine, DiskWaits? waits = null)
    : WatchedWriteAheadLog(options, stateMachine, waits), IAuditTrail<IRaftLogEntry>
{
    async ValueTask IAuditTrail<IRaftLogEntry>.AppendAsync<TEntry>(ILogEntryProducer<TEntry> entries, long startIndex, bool skipCommitted, CancellationToken token)
    {
        // Not timed: DotNext's append reads the entries from the leader's TCP stream as it writes them.
        await AppendAsync(entries, startIndex, skipCommitted, token).ConfigureAwait(false);
        var start = Stopwatch.GetTimestamp();
        try
        {
            await FlushAsync(token).ConfigureAwait(false);
        }
        finally
        {
            // Also when cancelled: DotNext's follower gives up on its answer at the request timeout.
            Waits?.Observe(DiskWait.FollowerAppend, Stopwatch.GetElapsedTime(start));
        }
    }
}
