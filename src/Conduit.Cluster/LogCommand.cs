using System.Buffers;
using System.Text;
using Conduit.Storage.Log;

namespace Conduit.Cluster;

/// <summary>What a Raft entry of the replicated log asks every node to do, in the order of the log.</summary>
internal abstract record LogCommand
{
    /// <summary>Appends records to a topic (created with the node's defaults when missing), as one batch.</summary>
    public sealed record Append(string Topic, IReadOnlyList<LogRecord> Records) : LogCommand;

    public sealed record CreateTopic(string Name, TopicConfig Config) : LogCommand;

    public sealed record Truncate(string Topic, long BeforeOffset) : LogCommand;

    /// <summary>
    /// Several produce requests to one topic in one entry (the leader's group commit): applied
    /// one after another exactly as if each were its own <see cref="Append"/> entry, each with its
    /// own answer (offset, duplicate, or refusal), so merging changes no outcome.
    /// </summary>
    public sealed record AppendBatches(string Topic, IReadOnlyList<IReadOnlyList<LogRecord>> Batches) : LogCommand;

    /// <summary>
    /// An idempotent producer's new epoch, chosen by the leader (InitProducer): every node registers
    /// it in the topic's producer state (created when missing), so a later leader knows it and the
    /// older epochs are fenced from now on; refused alike everywhere when the producer already has
    /// that epoch or a newer one. <paramref name="TimestampMs"/> is the leader's clock (the
    /// producer's last activity, for expiry).
    /// </summary>
    public sealed record InitProducer(string Topic, long ProducerId, int Epoch, long TimestampMs) : LogCommand;

    private const byte Version = 1;
    private const byte AppendKind = 1, CreateKind = 2, TruncateKind = 3, InitProducerKind = 4, AppendBatchesKind = 5;

    /// <summary>
    /// The entry's bytes: a version, a kind, then the fields. Every field of every record is
    /// carried (timestamps filled in by the leader; an idempotent producer's id, epoch and sequence,
    /// which each node's apply checks alike), so each node's apply writes the same record.
    /// </summary>
    public byte[] Encode()
    {
        using var buffer = new MemoryStream();
        using (var writer = new BinaryWriter(buffer, Encoding.UTF8, leaveOpen: true))
        {
            writer.Write(Version);
            switch (this)
            {
                case Append append:
                    writer.Write(AppendKind);
                    writer.Write(append.Topic);
                    WriteRecords(writer, append.Records);
                    break;
                case AppendBatches batches:
                    writer.Write(AppendBatchesKind);
                    writer.Write(batches.Topic);
                    writer.Write(batches.Batches.Count);
                    foreach (var batch in batches.Batches) WriteRecords(writer, batch);
                    break;
                case CreateTopic create:
                    writer.Write(CreateKind);
                    writer.Write(create.Name);
                    writer.Write(create.Config.Durability is { } d ? (int)d : -1);
                    WriteOptional(writer, create.Config.FlushIntervalMs);
                    WriteOptional(writer, create.Config.SegmentBytes);
                    WriteOptional(writer, create.Config.RetentionBytes);
                    WriteOptional(writer, create.Config.RetentionMs);
                    break;
                case Truncate truncate:
                    writer.Write(TruncateKind);
                    writer.Write(truncate.Topic);
                    writer.Write(truncate.BeforeOffset);
                    break;
                case InitProducer init:
                    writer.Write(InitProducerKind);
                    writer.Write(init.Topic);
                    writer.Write(init.ProducerId);
                    writer.Write(init.Epoch);
                    writer.Write(init.TimestampMs);
                    break;
                default:
                    throw new InvalidOperationException("unknown command");
            }
        }
        return buffer.ToArray();
    }

    public static LogCommand Decode(in ReadOnlySequence<byte> payload)
    {
        using var reader = new BinaryReader(new MemoryStream(payload.ToArray()), Encoding.UTF8);
        var version = reader.ReadByte();
        if (version != Version) throw new InvalidDataException($"log command version {version} is not known to this node (it knows {Version}): upgrade it");
        switch (reader.ReadByte())
        {
            case AppendKind:
            {
                var topic = reader.ReadString();
                return new Append(topic, ReadRecords(reader));
            }
            case AppendBatchesKind:
            {
                var topic = reader.ReadString();
                var count = reader.ReadInt32();
                if (count < 1) throw new InvalidDataException($"an entry of {count} batches");
                var batches = new LogRecord[count][];
                for (var i = 0; i < count; i++) batches[i] = ReadRecords(reader);
                return new AppendBatches(topic, batches);
            }
            case CreateKind:
            {
                var name = reader.ReadString();
                var durability = reader.ReadInt32();
                return new CreateTopic(name, new TopicConfig
                {
                    Durability = durability < 0 ? null : (Durability)durability,
                    FlushIntervalMs = ReadOptional(reader),
                    SegmentBytes = ReadOptional(reader),
                    RetentionBytes = ReadOptional(reader),
                    RetentionMs = ReadOptional(reader),
                });
            }
            case TruncateKind:
                return new Truncate(reader.ReadString(), reader.ReadInt64());
            case InitProducerKind:
                return new InitProducer(reader.ReadString(), reader.ReadInt64(), reader.ReadInt32(), reader.ReadInt64());
            case var kind:
                throw new InvalidDataException($"log command kind {kind} is not known to this node: upgrade it");
        }
    }

    private static void WriteRecords(BinaryWriter writer, IReadOnlyList<LogRecord> records)
    {
        writer.Write(records.Count);
        foreach (var record in records)
        {
            writer.Write(record.TimestampMs);
            writer.Write(record.ProducerId);
            writer.Write(record.ProducerEpoch);
            writer.Write(record.Sequence);
            WriteBytes(writer, record.Key.Span);
            writer.Write(record.Headers.Count);
            foreach (var (name, value) in record.Headers)
            {
                writer.Write(name);
                WriteBytes(writer, value.Span);
            }
            WriteBytes(writer, record.Value.Span);
        }
    }

    private static LogRecord[] ReadRecords(BinaryReader reader)
    {
        var count = reader.ReadInt32();
        var records = new LogRecord[count];
        for (var i = 0; i < count; i++)
        {
            var timestamp = reader.ReadInt64();
            var (producerId, epoch, sequence) = (reader.ReadInt64(), reader.ReadInt32(), reader.ReadInt64());
            var key = ReadBytes(reader);
            var headerCount = reader.ReadInt32();
            var headers = headerCount == 0 ? [] : new KeyValuePair<string, ReadOnlyMemory<byte>>[headerCount];
            for (var h = 0; h < headerCount; h++) headers[h] = new(reader.ReadString(), ReadBytes(reader));
            records[i] = new LogRecord { TimestampMs = timestamp, ProducerId = producerId, ProducerEpoch = epoch, Sequence = sequence, Key = key, Headers = headers, Value = ReadBytes(reader) };
        }
        return records;
    }

    private static void WriteBytes(BinaryWriter writer, ReadOnlySpan<byte> bytes)
    {
        writer.Write(bytes.Length);
        writer.Write(bytes);
    }

    private static byte[] ReadBytes(BinaryReader reader)
    {
        var length = reader.ReadInt32();
        return length == 0 ? [] : reader.ReadBytes(length);
    }

    private static void WriteOptional(BinaryWriter writer, long? value)
    {
        writer.Write(value.HasValue);
        writer.Write(value ?? 0);
    }

    private static long? ReadOptional(BinaryReader reader)
    {
        var has = reader.ReadBoolean();
        var value = reader.ReadInt64();
        return has ? value : null;
    }
}
