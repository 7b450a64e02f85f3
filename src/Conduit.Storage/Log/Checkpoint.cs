using System.Buffers.Binary;
using Microsoft.Extensions.Logging;

namespace Conduit.Storage.Log;

/// <summary>
/// A topic's durable end as recorded at its last clean shutdown or start, kept outside the
/// segments (so a store that loses its tail, or is truncated to nothing, cannot hide it):
/// <code>
/// "CNDTCKP1" | u64 topic id | i64 next offset (every offset below was durable) | u32 flags (1: clean shutdown) | u32 CRC-32C of the 28 bytes before
/// </code>
/// Written atomically (temporary file, fsync, rename, directory fsync).
/// </summary>
internal static class Checkpoint
{
    public const string FileName = "checkpoint";
    private const int Size = 32;
    private const uint CleanShutdown = 1;

    private static ReadOnlySpan<byte> Magic => "CNDTCKP1"u8;

    public readonly record struct State(long NextOffset, bool Clean);

    /// <summary>The recorded state, or null when there is none (or it is unreadable, which is logged).</summary>
    public static State? Read(string directory, ulong topicId, string topic, ILogger logger)
    {
        var path = Path.Combine(directory, FileName);
        if (!File.Exists(path)) return null;
        var data = File.ReadAllBytes(path);
        if (data.Length != Size || !data.AsSpan().StartsWith(Magic)
            || BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(28)) != Crc32C.Compute(data.AsSpan(0, 28))
            || BinaryPrimitives.ReadUInt64LittleEndian(data.AsSpan(8)) != topicId)
        {
            logger.LogError("Log topic '{Topic}': its checkpoint file {Path} is damaged or belongs to another topic; recovery relies on the commit frames alone.", topic, path);
            return null;
        }
        return new State(BinaryPrimitives.ReadInt64LittleEndian(data.AsSpan(16)), (BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(24)) & CleanShutdown) != 0);
    }

    public static void Write(LogFileSystem files, string directory, ulong topicId, long nextOffset, bool clean)
    {
        Span<byte> data = stackalloc byte[Size];
        Magic.CopyTo(data);
        BinaryPrimitives.WriteUInt64LittleEndian(data[8..], topicId);
        BinaryPrimitives.WriteInt64LittleEndian(data[16..], nextOffset);
        BinaryPrimitives.WriteUInt32LittleEndian(data[24..], clean ? CleanShutdown : 0);
        BinaryPrimitives.WriteUInt32LittleEndian(data[28..], Crc32C.Compute(data[..28]));
        files.WriteAtomically(Path.Combine(directory, FileName), data);
    }
}
