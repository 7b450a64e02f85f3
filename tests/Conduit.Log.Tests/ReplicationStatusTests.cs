using Conduit.Grpc;
using Conduit.Services.Log;
using Conduit.Storage.Log;
using Google.Rpc;
using Grpc.Core;
using Microsoft.Extensions.Logging.Abstractions;

namespace Conduit.Log.Tests;

/// <summary>The statuses of a cluster node's refusals that only replication causes (docs/cluster.md).</summary>
public class ReplicationStatusTests
{
    private readonly LogExceptionMapper _mapper = new(NullLogger<LogExceptionMapper>.Instance);

    [Fact]
    public void An_epoch_taken_by_other_leaders_entries_is_ABORTED_with_the_producer_and_RetryInfo()
    {
        var status = _mapper.Map(new ProducerEpochTakenException("t", 77, 5), "/log.v1.Log/InitProducer");
        Assert.NotNull(status);
        Assert.Equal(StatusCode.Aborted, status.StatusCode);
        var info = status.GetDetail<ErrorInfo>()!;
        Assert.Equal("PRODUCER_EPOCH_TAKEN", info.Reason);
        Assert.Equal("77", info.Metadata["producer_id"]);
        Assert.Equal("5", info.Metadata["producer_epoch"]);
        Assert.NotNull(status.GetDetail<RetryInfo>());
    }

    [Fact]
    public void A_read_that_met_a_snapshot_install_is_UNAVAILABLE_with_TOPIC_REPLACED_and_RetryInfo()
    {
        var status = _mapper.Map(new TopicReplacedException("t"), "/log.v1.Log/Consume");
        Assert.NotNull(status);
        Assert.Equal(StatusCode.Unavailable, status.StatusCode);
        Assert.Contains("snapshot install", status.Status.Detail, StringComparison.Ordinal);
        Assert.Equal("TOPIC_REPLACED", status.GetDetail<ErrorInfo>()!.Reason);
        Assert.NotNull(status.GetDetail<RetryInfo>());

        var stream = LogExceptionMapper.TopicReplaced("t", 34);
        Assert.Contains("resume from offset 34", stream.Status.Detail, StringComparison.Ordinal);
        Assert.Equal("34", stream.GetDetail<ErrorInfo>()!.Metadata["next_offset"]);
    }

    [Fact]
    public void A_full_append_queue_at_the_leader_is_RESOURCE_EXHAUSTED_with_the_topic_and_RetryInfo()
    {
        var status = _mapper.Map(new AppendQueueFullException("t", 64L * 1024 * 1024), "/log.v1.Log/Produce");
        Assert.NotNull(status);
        Assert.Equal(StatusCode.ResourceExhausted, status.StatusCode);
        Assert.Contains("nothing was written", status.Status.Detail, StringComparison.Ordinal);
        var info = status.GetDetail<ErrorInfo>()!;
        Assert.Equal("APPEND_QUEUE_FULL", info.Reason);
        Assert.Equal("t", info.Metadata["topic"]);
        Assert.Equal("67108864", info.Metadata["limit_bytes"]);
        Assert.NotNull(status.GetDetail<RetryInfo>());
    }
}
