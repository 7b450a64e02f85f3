namespace Conduit.Storage.Log;

/// <summary>
/// A write sent to a node of a replicated log that does not lead it: only the leader appends. The
/// client should send it to the leader (<see cref="LeaderId"/> at <see cref="LeaderRpcAddress"/>),
/// or, when no leader is known (an election is under way), retry shortly.
/// </summary>
public sealed class NotLeaderException(string nodeId, string? leaderId, string? leaderRpcAddress, Exception? inner = null)
    : Exception(leaderId is null
        ? $"Node '{nodeId}' is not the leader of the log and no leader is known now (an election is under way, or a majority is unreachable); retry shortly."
        : $"Node '{nodeId}' is not the leader of the log; send writes to the leader '{leaderId}'{(string.IsNullOrEmpty(leaderRpcAddress) ? "" : $" at {leaderRpcAddress}")}.", inner)
{
    public string NodeId { get; } = nodeId;

    /// <summary>The leader's id, or null while there is none.</summary>
    public string? LeaderId { get; } = leaderId;

    /// <summary>The leader's gRPC address (host:port), or null when not known.</summary>
    public string? LeaderRpcAddress { get; } = leaderRpcAddress;
}

/// <summary>
/// The leader lost its leadership after it proposed the write and before the write was committed:
/// a new leader may still commit it, or not. Unlike <see cref="NotLeaderException"/> (nothing was
/// proposed), a blind retry may write the records twice; an idempotent producer's retry may not.
/// </summary>
public sealed class LeadershipLostException(string nodeId, Exception? inner = null)
    : Exception($"Node '{nodeId}' lost the leadership of the log while replicating the write: it may or may not be appended. Retry with an idempotent producer (a plain retry may append it twice).", inner)
{
    public string NodeId { get; } = nodeId;
}

/// <summary>A membership change the leader refused or could not complete; <see cref="Reason"/> says which.</summary>
public sealed class MembershipChangeException(MembershipProblem reason, string message, Exception? inner = null) : Exception(message, inner)
{
    public MembershipProblem Reason { get; } = reason;
}

public enum MembershipProblem
{
    /// <summary>The id or the Raft address is a member already.</summary>
    MemberExists,

    /// <summary>No member has that id.</summary>
    MemberNotFound,

    /// <summary>Another membership change is under way (one at a time).</summary>
    ChangeInProgress,

    /// <summary>The new node did not answer, or did not catch up in the rounds allowed; nothing changed.</summary>
    CatchUpFailed,

    /// <summary>The request is not valid (an address that is not host:port).</summary>
    Invalid,
}

/// <summary>
/// A change (a topic's creation, a truncation) was proposed, but its commit was not seen within
/// the wait: it may still be applied, or not. Not a refusal a client may blindly repeat.
/// </summary>
public sealed class CommitTimeoutException(string nodeId, string what, TimeSpan waited, Exception? inner = null)
    : Exception($"Node '{nodeId}' proposed {what} but did not see it committed within {waited.TotalMilliseconds:0} ms (is a majority reachable?): it may or may not have been applied. Check before repeating it.", inner)
{
    public string NodeId { get; } = nodeId;
}

/// <summary>
/// An InitProducer entry whose epoch the producer already has (or a newer one): an entry of an
/// earlier leader gave it meanwhile. The leader picks again; after several such refusals in a row
/// the caller gets this (ABORTED with RetryInfo: calling again is safe, no epoch was handed out).
/// </summary>
public sealed class ProducerEpochTakenException(string topic, long producerId, int epoch)
    : Exception($"Producer {producerId} already has epoch {epoch} or a newer one in topic '{topic}'.")
{
    public string Topic { get; } = topic;
    public long ProducerId { get; } = producerId;
    public int Epoch { get; } = epoch;
}

/// <summary>
/// The leader has too many bytes of produce requests waiting for a topic's next Raft entry (group
/// commit): this one was refused and nothing was proposed, so a retry (after a pause) is safe.
/// </summary>
public sealed class AppendQueueFullException(string topic, long limitBytes)
    : Exception($"Topic '{topic}' has {limitBytes} bytes of records waiting at the leader for replication; nothing was written. Retry shortly.")
{
    public string Topic { get; } = topic;
    public long LimitBytes { get; } = limitBytes;
}
