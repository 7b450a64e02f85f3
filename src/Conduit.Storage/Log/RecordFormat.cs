using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Text;

namespace Conduit.Storage.Log;

/// <summary>CRC-32C (Castagnoli), with the hardware instruction where the CPU has one.</summary>
public static class Crc32C
{
    public static uint Compute(ReadOnlySpan<byte> data)
    {
        var crc = 0xFFFFFFFFu;
        while (data.Length >= 8)
        {
            crc = BitOperations.Crc32C(crc, MemoryMarshal.Read<ulong>(data));
            data = data[8..];
        }
        foreach (var b in data) crc = BitOperations.Crc32C(crc, b);
        return ~crc;
    }
}

/// <summary>
/// How a record is laid out in a store file (little-endian):
/// <code>
/// u32 body length | u32 CRC-32C of the body | body
/// body: u64 offset | i64 timestamp ms | u32 key length | key | u16 header count
///       | per header: u16 name length | name (UTF-8) | u32 value length | value
///       | value (the rest of the body)
/// </code>
/// The offset inside the checksummed body lets recovery rebuild the index from the store alone
/// and resynchronise past a damaged region.
/// </summary>
internal static class RecordFormat
{
    public const int HeaderSize = 8;
    public const int MinBodySize = 8 + 8 + 4 + 2;
    public const int MaxBodySize = 64 * 1024 * 1024;

    public static int BodySize(LogRecord record)
    {
        long size = MinBodySize + record.Key.Length + record.Value.Length;
        foreach (var (name, value) in record.Headers)
        {
            size += 2 + Encoding.UTF8.GetByteCount(name) + 4 + value.Length;
        }
        if (size > MaxBodySize) throw new ArgumentException($"A record is at most {MaxBodySize} bytes encoded; this one is {size}.");
        if (record.Headers.Count > ushort.MaxValue) throw new ArgumentException("A record has at most 65535 headers.");
        return (int)size;
    }

    /// <summary>Writes header + body into <paramref name="destination"/> (exactly HeaderSize + bodySize bytes).</summary>
    public static void Write(Span<byte> destination, int bodySize, long offset, long timestampMs, LogRecord record)
    {
        var body = destination.Slice(HeaderSize, bodySize);
        var p = 0;
        BinaryPrimitives.WriteInt64LittleEndian(body[p..], offset); p += 8;
        BinaryPrimitives.WriteInt64LittleEndian(body[p..], timestampMs); p += 8;
        BinaryPrimitives.WriteInt32LittleEndian(body[p..], record.Key.Length); p += 4;
        record.Key.Span.CopyTo(body[p..]); p += record.Key.Length;
        BinaryPrimitives.WriteUInt16LittleEndian(body[p..], (ushort)record.Headers.Count); p += 2;
        foreach (var (name, value) in record.Headers)
        {
            var nameLength = Encoding.UTF8.GetBytes(name, body[(p + 2)..]);
            if (nameLength > ushort.MaxValue) throw new ArgumentException("A header name is at most 65535 bytes.");
            BinaryPrimitives.WriteUInt16LittleEndian(body[p..], (ushort)nameLength); p += 2 + nameLength;
            BinaryPrimitives.WriteInt32LittleEndian(body[p..], value.Length); p += 4;
            value.Span.CopyTo(body[p..]); p += value.Length;
        }
        record.Value.Span.CopyTo(body[p..]);
        BinaryPrimitives.WriteInt32LittleEndian(destination, bodySize);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], Crc32C.Compute(body));
    }

    /// <summary>Body length from a header, or -1 when it cannot be a record.</summary>
    public static int BodyLength(ReadOnlySpan<byte> header)
    {
        var length = BinaryPrimitives.ReadInt32LittleEndian(header);
        return length is < MinBodySize or > MaxBodySize ? -1 : length;
    }

    public static bool ChecksumMatches(ReadOnlySpan<byte> header, ReadOnlySpan<byte> body) =>
        BinaryPrimitives.ReadUInt32LittleEndian(header[4..]) == Crc32C.Compute(body);

    public static long OffsetOf(ReadOnlySpan<byte> body) => BinaryPrimitives.ReadInt64LittleEndian(body);

    public static long TimestampOf(ReadOnlySpan<byte> body) => BinaryPrimitives.ReadInt64LittleEndian(body[8..]);

    /// <summary>Decodes a body whose checksum matched; null when its structure is inconsistent.</summary>
    public static LogRecord? Decode(ReadOnlyMemory<byte> bodyMemory)
    {
        var body = bodyMemory.Span;
        var p = 16;
        var keyLength = BinaryPrimitives.ReadInt32LittleEndian(body[p..]); p += 4;
        if (keyLength < 0 || keyLength > body.Length - p - 2) return null;
        var key = bodyMemory.Slice(p, keyLength); p += keyLength;
        int count = BinaryPrimitives.ReadUInt16LittleEndian(body[p..]); p += 2;
        var headers = count == 0 ? [] : new KeyValuePair<string, ReadOnlyMemory<byte>>[count];
        for (var i = 0; i < count; i++)
        {
            if (body.Length - p < 2) return null;
            int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(body[p..]); p += 2;
            if (body.Length - p < nameLength + 4) return null;
            var name = Encoding.UTF8.GetString(body.Slice(p, nameLength)); p += nameLength;
            var valueLength = BinaryPrimitives.ReadInt32LittleEndian(body[p..]); p += 4;
            if (valueLength < 0 || valueLength > body.Length - p) return null;
            headers[i] = new(name, bodyMemory.Slice(p, valueLength)); p += valueLength;
        }
        return new LogRecord
        {
            Offset = OffsetOf(body),
            TimestampMs = TimestampOf(body),
            Key = key,
            Headers = headers,
            Value = bodyMemory[p..],
        };
    }
}
