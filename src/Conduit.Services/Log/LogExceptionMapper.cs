using System.Globalization;
using System.Threading.Channels;
using Conduit.Grpc;
using Conduit.Storage.Log;
using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Conduit.Services.Log;

/// <summary>
/// The statuses of the storage engine's failures, for log.v1.Log and log.v1.LogAdmin calls only
/// (registered in DI; run by <see cref="ExceptionInterceptor"/> in place of a catch block around
/// every storage call). What the client may do next decides the code: a range or a conflict it can
/// correct, a damaged record it cannot (DATA_LOSS), a full disk (RESOURCE_EXHAUSTED), a topic or a
/// log that takes no writes for now (UNAVAILABLE). Failures of the disk are logged here whole; the
/// client's message names no server path.
/// </summary>
public sealed class LogExceptionMapper(ILogger<LogExceptionMapper> logger) : IExceptionMapper
{
    private const string LogService = "/log.v1.";

    public RpcException? Map(Exception exception, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (!context.Method.StartsWith(LogService, StringComparison.Ordinal)) return null;
        // A call the client ended (a reset stream fails the request read with an IOException) is
        // not a storage failure: LoggingInterceptor reports it CANCELLED.
        if (context.CancellationToken.IsCancellationRequested) return null;
        return Map(exception, context.Method);
    }

    /// <summary>The status of <paramref name="exception"/> thrown by a call of <paramref name="method"/>; null: not the storage's.</summary>
    public RpcException? Map(Exception exception, string method)
    {
        switch (exception)
        {
            case ChannelClosedException { InnerException: { } inner }:
                return Map(inner, method);
            case OffsetOutOfRangeException range:
                return LogMapping.OutOfRange(range, (ulong)range.Offset);
            case RecordCorruptedException corrupted:
                logger.LogError("{Method}: {Message}", method, corrupted.Message);
                return RpcException.WithDetails(StatusCode.DataLoss, corrupted.Message,
                    Details.ErrorInfo("RECORD_CORRUPTED", LogMapping.ErrorDomain, new Dictionary<string, string>
                    {
                        ["topic"] = corrupted.Topic,
                        ["offset"] = corrupted.Offset.ToString(CultureInfo.InvariantCulture),
                    }),
                    Details.LocalizedMessage($"Record {corrupted.Offset} of topic '{corrupted.Topic}' is damaged on disk and is not served; the records after it can be read from offset {corrupted.Offset + 1}."));
            case NotLeaderException notLeader:
                return NotLeader(notLeader);
            case LeadershipLostException lost:
                return RpcException.WithDetails(StatusCode.Unavailable, lost.Message,
                    Details.ErrorInfo("LEADERSHIP_LOST", LogMapping.ErrorDomain, new Dictionary<string, string> { ["node_id"] = lost.NodeId }));
            case CommitTimeoutException timeout:
                // No RetryInfo: repeating a change that may still be applied is the caller's decision.
                return RpcException.WithDetails(StatusCode.DeadlineExceeded, timeout.Message,
                    Details.ErrorInfo("OUTCOME_UNKNOWN", LogMapping.ErrorDomain, new Dictionary<string, string> { ["node_id"] = timeout.NodeId }),
                    Details.LocalizedMessage("The change was proposed but not seen committed in time: it may or may not have been applied. Look (`conduit log topics`) before repeating it."));
            case OutOfOrderSequenceException gap:
                return RpcException.WithDetails(StatusCode.OutOfRange, gap.Message,
                    ProducerInfo("SEQUENCE_GAP", gap.Topic, gap.ProducerId, gap.Epoch, ("expected_sequence", gap.Expected), ("sequence", gap.Got)),
                    Details.BadRequest(("sequence", $"expected {gap.Expected}, got {gap.Got}")));
            case ProducerFencedException fenced:
                return RpcException.WithDetails(StatusCode.FailedPrecondition, fenced.Message,
                    ProducerInfo("PRODUCER_FENCED", fenced.Topic, fenced.ProducerId, fenced.Epoch, ("current_epoch", fenced.Current)),
                    Details.LocalizedMessage($"A newer instance of producer {fenced.ProducerId} writes to topic '{fenced.Topic}' (epoch {fenced.Current}); this one (epoch {fenced.Epoch}) must stop."));
            case DuplicateSequenceException duplicate:
                return RpcException.WithDetails(StatusCode.AlreadyExists, duplicate.Message,
                    ProducerInfo("DUPLICATE_SEQUENCE", duplicate.Topic, duplicate.ProducerId, duplicate.Epoch, ("sequence", duplicate.Sequence)));
            case ProducerEpochTakenException taken:
                // No epoch was handed out: calling InitProducer again is safe.
                return RpcException.WithDetails(StatusCode.Aborted, taken.Message,
                    ProducerInfo("PRODUCER_EPOCH_TAKEN", taken.Topic, taken.ProducerId, taken.Epoch),
                    Details.LocalizedMessage($"Producer {taken.ProducerId} was given new epochs by other leaders' entries while this call picked one; no epoch was handed out. Call InitProducer again."),
                    Details.RetryInfo(TimeSpan.FromMilliseconds(200)));
            case AppendQueueFullException full:
                // Refused before it was proposed: a retry after the pause is safe.
                return RpcException.WithDetails(StatusCode.ResourceExhausted, full.Message,
                    Details.ErrorInfo("APPEND_QUEUE_FULL", LogMapping.ErrorDomain, new Dictionary<string, string>
                    {
                        ["topic"] = full.Topic,
                        ["limit_bytes"] = full.LimitBytes.ToString(CultureInfo.InvariantCulture),
                    }),
                    Details.RetryInfo(TimeSpan.FromMilliseconds(200)));
            case TopicReplacedException replaced:
                return TopicReplaced(replaced.Topic, null);
            case TopicExistsException exists:
                return LogMapping.TopicExists(exists.Topic);
            case TopicLimitException limit:
                return RpcException.WithDetails(StatusCode.ResourceExhausted, limit.Message,
                    Details.QuotaFailure(("topics", $"at most {limit.Limit} topics; the server's Conduit:Log:MaxTopics")));
            case DiskFullException full:
                logger.LogError(full, "{Method}: {Message}", method, full.Message);
                return RpcException.WithDetails(StatusCode.ResourceExhausted,
                    $"Topic '{full.Topic}' could not take the record: the server's disk is full; nothing was written.",
                    Details.ErrorInfo("DISK_FULL", LogMapping.ErrorDomain, new Dictionary<string, string> { ["topic"] = full.Topic }),
                    Details.LocalizedMessage($"The server's disk is full: the record was not written to topic '{full.Topic}'. Retry once space is freed; no restart is needed. Its records can still be read."),
                    Details.RetryInfo(TimeSpan.FromSeconds(5)));
            case TopicOfflineException offline:
                logger.LogError("{Method}: {Message}", method, offline.Message);
                return RpcException.WithDetails(StatusCode.Unavailable,
                    $"Topic '{offline.Topic}' is offline: its files could not be opened when the server started.",
                    Details.ErrorInfo("TOPIC_OFFLINE", LogMapping.ErrorDomain, new Dictionary<string, string> { ["topic"] = offline.Topic }),
                    Details.LocalizedMessage($"Topic '{offline.Topic}' is offline: its files could not be opened when the server started (the server's log says why). The other topics are served."));
            case LogFailedException failed:
                logger.LogError(failed, "{Method}: {Message}", method, failed.Message);
                var topic = ClientInput.Shorten(failed.Topic);
                if (IsDiskFull(failed.InnerException))
                {
                    return RpcException.WithDetails(StatusCode.ResourceExhausted,
                        $"Topic '{topic}' stopped taking writes: the server's disk is full.",
                        Details.ErrorInfo("DISK_FULL", LogMapping.ErrorDomain, new Dictionary<string, string> { ["topic"] = topic }),
                        Details.LocalizedMessage($"The server's disk is full: topic '{topic}' takes no writes until space is freed and the server restarts. Its records can still be read."));
                }
                return RpcException.WithDetails(StatusCode.Unavailable,
                    $"Topic '{topic}' stopped taking writes after a storage failure.",
                    Details.ErrorInfo("TOPIC_WRITES_STOPPED", LogMapping.ErrorDomain, new Dictionary<string, string> { ["topic"] = topic }),
                    Details.LocalizedMessage($"Topic '{topic}' takes no writes until the server restarts (its disk failed; the server's log says how). Its records can still be read; a record whose produce failed may or may not be in the log after the restart."));
            case IOException io when IsDiskFull(io):
                logger.LogError(io, "{Method}: the disk is full", method);
                return RpcException.WithDetails(StatusCode.ResourceExhausted, "The server's disk is full; nothing was changed.",
                    Details.ErrorInfo("DISK_FULL", LogMapping.ErrorDomain),
                    Details.LocalizedMessage("The server's disk is full. Retry once space is freed."));
            case IOException io:
                logger.LogError(io, "{Method}: storage failure", method);
                return RpcException.WithDetails(StatusCode.Unavailable, "The log's storage failed; nothing was changed.",
                    Details.ErrorInfo("STORAGE_FAILURE", LogMapping.ErrorDomain), Details.RetryInfo(TimeSpan.FromSeconds(1)));
            case ObjectDisposedException:
                return RpcException.WithDetails(StatusCode.Unavailable, "The log is closing: the server is shutting down.",
                    Details.RetryInfo(TimeSpan.FromSeconds(1)));
            case ArgumentException argument:
                return RpcException.WithDetails(StatusCode.InvalidArgument, argument.Message, Details.BadRequest(("record", argument.Message)));
            default:
                return null;
        }
    }

    /// <summary>
    /// A write to a follower of a replicated log (docs/cluster.md): UNAVAILABLE with ErrorInfo
    /// NOT_LEADER and the leader's id and gRPC address, so a client sends it there; while no leader
    /// is known, ErrorInfo NO_LEADER with RetryInfo.
    /// </summary>
    /// <summary>An idempotent producer's refusal: ErrorInfo with the topic, the producer and its epoch, and what else tells the case apart.</summary>
    private static Google.Rpc.ErrorInfo ProducerInfo(string reason, string topic, long producerId, int epoch, params (string Key, long Value)[] more)
    {
        var metadata = new Dictionary<string, string>
        {
            ["topic"] = topic,
            ["producer_id"] = producerId.ToString(CultureInfo.InvariantCulture),
            ["producer_epoch"] = epoch.ToString(CultureInfo.InvariantCulture),
        };
        foreach (var (key, value) in more) metadata[key] = value.ToString(CultureInfo.InvariantCulture);
        return Details.ErrorInfo(reason, LogMapping.ErrorDomain, metadata);
    }

    /// <summary>
    /// A read of a follower's topic whose files a snapshot install replaced while it ran: UNAVAILABLE
    /// with ErrorInfo TOPIC_REPLACED and RetryInfo (the same offsets hold the same records after it);
    /// a stream says the offset to resume from.
    /// </summary>
    public static RpcException TopicReplaced(string topic, long? nextOffset)
    {
        var metadata = new Dictionary<string, string> { ["topic"] = topic };
        if (nextOffset is { } next) metadata["next_offset"] = next.ToString(CultureInfo.InvariantCulture);
        var resume = nextOffset is { } n ? $"resume from offset {n}" : "call again";
        return RpcException.WithDetails(StatusCode.Unavailable, $"Topic '{topic}' was replaced by a snapshot install on this node while it was read; {resume}.",
            Details.ErrorInfo("TOPIC_REPLACED", LogMapping.ErrorDomain, metadata),
            Details.RetryInfo(TimeSpan.FromMilliseconds(200)));
    }

    public static RpcException NotLeader(NotLeaderException notLeader)
    {
        ArgumentNullException.ThrowIfNull(notLeader);
        if (notLeader.LeaderId is null)
        {
            return RpcException.WithDetails(StatusCode.Unavailable, notLeader.Message,
                Details.ErrorInfo("NO_LEADER", LogMapping.ErrorDomain, new Dictionary<string, string> { ["node_id"] = notLeader.NodeId }),
                Details.RetryInfo(TimeSpan.FromMilliseconds(500)));
        }
        var metadata = new Dictionary<string, string> { ["node_id"] = notLeader.NodeId, ["leader_id"] = notLeader.LeaderId };
        if (!string.IsNullOrEmpty(notLeader.LeaderRpcAddress)) metadata["leader_rpc_addr"] = notLeader.LeaderRpcAddress;
        return RpcException.WithDetails(StatusCode.Unavailable, notLeader.Message, Details.ErrorInfo("NOT_LEADER", LogMapping.ErrorDomain, metadata));
    }

    /// <summary>ENOSPC or EDQUOT (see <see cref="DiskSpace.IsFull"/>).</summary>
    public static bool IsDiskFull(Exception? exception) => DiskSpace.IsFull(exception);
}
