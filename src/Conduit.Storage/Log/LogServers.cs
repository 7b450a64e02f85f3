namespace Conduit.Storage.Log;

/// <summary>
/// One server holding the log: its id, where it answers gRPC (host:port), whether it leads, and
/// (in a cluster) its state as the answering node sees it ("leader", "follower", "unreachable",
/// "unknown"; the answering node itself "no-leader" or "not-member" too).
/// </summary>
public readonly record struct LogServer(string Id, string RpcAddress, bool IsLeader, string State = "");

/// <summary>
/// One node's own Raft figures (entry indexes; docs/cluster.md, "Progress per node"): the term it
/// is in, the last entry it knows committed, the last it applied to its log, the last in its Raft log.
/// </summary>
public readonly record struct LogNodeProgress(long Term, long CommitIndex, long AppliedIndex, long LastIndex);

/// <summary>
/// The servers that hold the log now (proglog's GetServers). A single node lists itself as the
/// leader; a replicated log lists its members.
/// </summary>
public interface ILogServers
{
    IReadOnlyList<LogServer> Servers();

    /// <summary>This node's id in <see cref="Servers"/> and its own Raft figures; null on a single node (no Raft).</summary>
    (string Id, LogNodeProgress Progress)? LocalProgress() => null;

    /// <summary>When this node applied Raft entry <paramref name="index"/>, if it still knows (recent entries only).</summary>
    DateTimeOffset? AppliedAt(long index) => null;
}

/// <summary>Membership changes of a replicated log, made by its leader (LogAdmin AddServer/RemoveServer).</summary>
public interface ILogMembership
{
    /// <summary>Adds the running node <paramref name="id"/> at <paramref name="raftAddress"/> once it caught up; the members after.</summary>
    Task<IReadOnlyList<LogServer>> AddServerAsync(string id, string raftAddress, string rpcAddress, CancellationToken token);

    /// <summary>Removes member <paramref name="id"/>; the members after.</summary>
    Task<IReadOnlyList<LogServer>> RemoveServerAsync(string id, CancellationToken token);
}
