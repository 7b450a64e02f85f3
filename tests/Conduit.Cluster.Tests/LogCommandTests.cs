using System.Buffers;
using Conduit.Storage.Log;

namespace Conduit.Cluster.Tests;

public class LogCommandTests
{
    [Fact]
    public void An_append_carries_every_field_of_every_record()
    {
        LogRecord[] records =
        [
            new() { TimestampMs = 1_700_000_000_123, Key = "k"u8.ToArray(), Value = "v1"u8.ToArray(), Headers = [new("h1", "x"u8.ToArray()), new("h2", Array.Empty<byte>())] },
            new() { TimestampMs = 5, Value = Array.Empty<byte>() },
            new() { TimestampMs = 6, Value = "p"u8.ToArray(), ProducerId = 0x7123_4567_89ab_cdef, ProducerEpoch = 3, Sequence = 41 },
        ];
        var decoded = Assert.IsType<LogCommand.Append>(LogCommand.Decode(new ReadOnlySequence<byte>(new LogCommand.Append("orders", records).Encode())));
        Assert.Equal("orders", decoded.Topic);
        Assert.Equal(3, decoded.Records.Count);
        for (var i = 0; i < records.Length; i++)
        {
            Assert.Equal(records[i].TimestampMs, decoded.Records[i].TimestampMs);
            Assert.Equal((records[i].ProducerId, records[i].ProducerEpoch, records[i].Sequence), (decoded.Records[i].ProducerId, decoded.Records[i].ProducerEpoch, decoded.Records[i].Sequence));
            Assert.Equal(records[i].Key.ToArray(), decoded.Records[i].Key.ToArray());
            Assert.Equal(records[i].Value.ToArray(), decoded.Records[i].Value.ToArray());
            Assert.Equal(records[i].Headers.Select(h => (h.Key, h.Value.ToArray())), decoded.Records[i].Headers.Select(h => (h.Key, h.Value.ToArray())));
        }
    }

    [Fact]
    public void Merged_requests_keep_their_boundaries_and_every_field()
    {
        LogRecord[][] batches =
        [
            [new() { TimestampMs = 7, Key = "k"u8.ToArray(), Value = "a"u8.ToArray(), Headers = [new("h", "x"u8.ToArray())] }],
            [new() { TimestampMs = 8, Value = "b"u8.ToArray(), ProducerId = 9, ProducerEpoch = 2, Sequence = 10 }, new() { TimestampMs = 8, Value = "c"u8.ToArray(), ProducerId = 9, ProducerEpoch = 2, Sequence = 11 }],
        ];
        var decoded = Assert.IsType<LogCommand.AppendBatches>(LogCommand.Decode(new ReadOnlySequence<byte>(new LogCommand.AppendBatches("t", batches).Encode())));
        Assert.Equal("t", decoded.Topic);
        Assert.Equal([1, 2], decoded.Batches.Select(b => b.Count));
        var flat = decoded.Batches.SelectMany(b => b).ToList();
        var sent = batches.SelectMany(b => b).ToList();
        for (var i = 0; i < sent.Count; i++)
        {
            Assert.Equal((sent[i].TimestampMs, sent[i].ProducerId, sent[i].ProducerEpoch, sent[i].Sequence), (flat[i].TimestampMs, flat[i].ProducerId, flat[i].ProducerEpoch, flat[i].Sequence));
            Assert.Equal(sent[i].Key.ToArray(), flat[i].Key.ToArray());
            Assert.Equal(sent[i].Value.ToArray(), flat[i].Value.ToArray());
            Assert.Equal(sent[i].Headers.Select(h => (h.Key, h.Value.ToArray())), flat[i].Headers.Select(h => (h.Key, h.Value.ToArray())));
        }
    }

    [Fact]
    public void Topic_creation_and_truncation_round_trip()
    {
        var config = new TopicConfig { Durability = Durability.Never, SegmentBytes = 4096, RetentionMs = 60_000 };
        var create = Assert.IsType<LogCommand.CreateTopic>(LogCommand.Decode(new ReadOnlySequence<byte>(new LogCommand.CreateTopic("t", config).Encode())));
        Assert.Equal(("t", config), (create.Name, create.Config));
        var truncate = Assert.IsType<LogCommand.Truncate>(LogCommand.Decode(new ReadOnlySequence<byte>(new LogCommand.Truncate("", 42).Encode())));
        Assert.Equal(("", 42L), (truncate.Topic, truncate.BeforeOffset));
    }

    [Fact]
    public void An_InitProducer_round_trips()
    {
        var init = Assert.IsType<LogCommand.InitProducer>(LogCommand.Decode(new ReadOnlySequence<byte>(new LogCommand.InitProducer("t", long.MaxValue, 7, 1_700_000_000_123).Encode())));
        Assert.Equal(("t", long.MaxValue, 7, 1_700_000_000_123L), (init.Topic, init.ProducerId, init.Epoch, init.TimestampMs));
    }

    [Fact]
    public void A_command_from_a_newer_version_is_refused_not_guessed()
    {
        var bytes = new LogCommand.Truncate("", 1).Encode();
        bytes[0] = 99;
        Assert.Throws<InvalidDataException>(() => LogCommand.Decode(new ReadOnlySequence<byte>(bytes)));
    }
}
