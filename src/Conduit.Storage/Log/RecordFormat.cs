using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace Conduit.Storage.Log;

/// <summary>
/// CRC-32C (Castagnoli), with the hardware instruction where the CPU has one. The instruction
/// takes 3 cycles per 8 bytes but can start one every cycle, so long inputs run as three
/// independent streams over adjacent blocks, joined by shifting a block's CRC past the blocks after
/// it (a table lookup, since the CRC's register is linear in its input: the method of Intel's
/// white paper "Fast CRC Computation for iSCSI Polynomial" and Mark Adler's crc32c.c).
/// </summary>
public static class Crc32C
{
    private const int LongBlock = 1024;
    private const int ShortBlock = 128;
    private static readonly uint[] LongShift = ShiftTable(LongBlock);
    private static readonly uint[] ShortShift = ShiftTable(ShortBlock);

    /// <summary>The CRC of <paramref name="data"/>; with a <paramref name="seed"/> (the CRC of a prefix), the CRC of prefix + data.</summary>
    public static uint Compute(ReadOnlySpan<byte> data, uint seed = 0)
    {
        var crc = ~seed;
        if (data.Length >= 3 * ShortBlock) crc = Blocks(crc, ref data);
        while (data.Length >= 8)
        {
            crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data[8..];
        }
        foreach (var b in data) crc = BitOperations.Crc32C(crc, b);
        return ~crc;
    }

    /// <summary>The register after as many whole blocks as <paramref name="data"/> has, which it takes off it (a call of its own: small inputs do not pay for it).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static uint Blocks(uint crc, ref ReadOnlySpan<byte> data)
    {
        while (data.Length >= 3 * LongBlock) crc = ThreeBlocks(crc, ref data, LongBlock, LongShift);
        while (data.Length >= 3 * ShortBlock) crc = ThreeBlocks(crc, ref data, ShortBlock, ShortShift);
        return crc;
    }

    /// <summary>The register after the next 3 x <paramref name="block"/> bytes, which it takes off <paramref name="data"/>.</summary>
    private static uint ThreeBlocks(uint crc, ref ReadOnlySpan<byte> data, int block, uint[] shift)
    {
        // Unchecked reads: the callers checked that data holds the three blocks.
        ref var a = ref MemoryMarshal.GetReference(data);
        ref var b = ref Unsafe.Add(ref a, block);
        ref var c = ref Unsafe.Add(ref b, block);
        uint crc1 = 0, crc2 = 0;
        for (nint i = 0; i < block; i += 8)
        {
            crc = BitOperations.Crc32C(crc, LittleEndian(Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref a, i))));
            crc1 = BitOperations.Crc32C(crc1, LittleEndian(Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref b, i))));
            crc2 = BitOperations.Crc32C(crc2, LittleEndian(Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref c, i))));
        }
        data = data[(3 * block)..];
        return Shift(Shift(crc, shift) ^ crc1, shift) ^ crc2;
    }

    /// <summary>8 bytes read in memory order as CRC-32C takes them: the first byte lowest (a no-op on little-endian CPUs; s390x is not).</summary>
    private static ulong LittleEndian(ulong read) => BitConverter.IsLittleEndian ? read : BinaryPrimitives.ReverseEndianness(read);

    /// <summary>The register after <paramref name="crc"/> is fed the table's block length of zero bytes.</summary>
    private static uint Shift(uint crc, uint[] table) =>
        table[(byte)crc] ^ table[256 + (byte)(crc >> 8)] ^ table[512 + (byte)(crc >> 16)] ^ table[768 + (crc >> 24)];

    /// <summary>For each byte of the register and each of its values, that value shifted past <paramref name="length"/> zero bytes.</summary>
    private static uint[] ShiftTable(int length)
    {
        var bits = new uint[32];
        for (var bit = 0; bit < 32; bit++)
        {
            var crc = 1u << bit;
            for (var i = 0; i < length; i += 8) crc = BitOperations.Crc32C(crc, 0UL);
            bits[bit] = crc;
        }
        var table = new uint[4 * 256];
        for (var n = 0; n < 4; n++)
        {
            for (var value = 0; value < 256; value++)
            {
                var shifted = 0u;
                for (var bit = 0; bit < 8; bit++)
                {
                    if ((value & (1 << bit)) != 0) shifted ^= bits[8 * n + bit];
                }
                table[256 * n + value] = shifted;
            }
        }
        return table;
    }
}

/// <summary>
/// The first 32 bytes of every store file: which topic and which base offset its records belong to.
/// <code>
/// "CNDTLOG1" | u64 topic id | i64 base offset | u32 flags | u32 CRC-32C of the 28 bytes before
/// </code>
/// Flags: bit 0 (<see cref="ProducerFields"/>) says the records are in format 2 (with an
/// attributes byte and the idempotent producer's fields, see <see cref="RecordFormat"/>); a
/// segment written before that has flags 0 and its records in format 1.
/// Every frame's checksum in the file is seeded with the CRC of (topic id, base offset), so bytes
/// copied from another topic or another segment fail their checksum here.
/// </summary>
internal static class SegmentHeader
{
    public const int Size = 32;

    public enum Status { Valid, Empty, NotASegment, Damaged, OtherTopic, OtherBase }

    private static ReadOnlySpan<byte> Magic => "CNDTLOG1"u8;

    /// <summary>The records of the segment are in format 2 (<see cref="RecordFormat.Version2"/>).</summary>
    public const uint ProducerFields = 1;

    /// <summary>The flags of a segment written now.</summary>
    public const uint CurrentFlags = ProducerFields;

    /// <summary>The record format of a segment whose header is valid.</summary>
    public static int RecordVersion(ReadOnlySpan<byte> header) =>
        (BinaryPrimitives.ReadUInt32LittleEndian(header[24..]) & ProducerFields) != 0 ? RecordFormat.Version2 : RecordFormat.Version1;

    /// <summary>A topic's identity: the first 8 bytes of SHA-256 of its name (so no table is needed to know it).</summary>
    public static ulong TopicId(string topic) =>
        BinaryPrimitives.ReadUInt64LittleEndian(SHA256.HashData(Encoding.UTF8.GetBytes("conduit.log.topic/" + topic)));

    /// <summary>The CRC seed of a segment's frames.</summary>
    public static uint Seed(ulong topicId, long baseOffset)
    {
        Span<byte> identity = stackalloc byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(identity, topicId);
        BinaryPrimitives.WriteInt64LittleEndian(identity[8..], baseOffset);
        return Crc32C.Compute(identity);
    }

    public static void Write(Span<byte> destination, ulong topicId, long baseOffset, uint flags = CurrentFlags)
    {
        Magic.CopyTo(destination);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], topicId);
        BinaryPrimitives.WriteInt64LittleEndian(destination[16..], baseOffset);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[24..], flags);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[28..], Crc32C.Compute(destination[..28]));
    }

    public static Status Check(ReadOnlySpan<byte> data, ulong topicId, long baseOffset)
    {
        if (data.Length < Size) return data.ContainsAnyExcept((byte)0) ? Status.Damaged : Status.Empty;
        var header = data[..Size];
        if (!header.ContainsAnyExcept((byte)0)) return Status.Empty;
        if (!header.StartsWith(Magic)) return Status.NotASegment;
        if (BinaryPrimitives.ReadUInt32LittleEndian(header[28..]) != Crc32C.Compute(header[..28])) return Status.Damaged;
        if (BinaryPrimitives.ReadUInt64LittleEndian(header[8..]) != topicId) return Status.OtherTopic;
        return BinaryPrimitives.ReadInt64LittleEndian(header[16..]) != baseOffset ? Status.OtherBase : Status.Valid;
    }
}

/// <summary>
/// The frame written after each batch of records, before the fsync that makes the batch durable
/// (group commit round, interval flush, segment seal, clean shutdown):
/// <code>
/// u32 0xFFFFFFFF | u32 CRC-32C (seeded) of the 16 bytes after | i64 next offset | i64 position of this frame
/// </code>
/// Batches are committed one after the other, each after the previous fsync returned, so an
/// intact commit frame proves that every batch before its own is on disk.
/// </summary>
internal static class CommitFrame
{
    public const int Size = 24;
    public const uint Marker = 0xFFFFFFFF;

    public static void Write(Span<byte> destination, long nextOffset, long position, uint seed)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Marker);
        BinaryPrimitives.WriteInt64LittleEndian(destination[8..], nextOffset);
        BinaryPrimitives.WriteInt64LittleEndian(destination[16..], position);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], Crc32C.Compute(destination[8..Size], seed));
    }

    /// <summary>The next offset a commit frame at <paramref name="position"/> names, or -1 when there is none there.</summary>
    public static long Read(ReadOnlySpan<byte> data, long position, uint seed)
    {
        if (data.Length < Size || BinaryPrimitives.ReadUInt32LittleEndian(data) != Marker) return -1;
        if (BinaryPrimitives.ReadInt64LittleEndian(data[16..]) != position) return -1;
        if (BinaryPrimitives.ReadUInt32LittleEndian(data[4..]) != Crc32C.Compute(data[8..Size], seed)) return -1;
        return BinaryPrimitives.ReadInt64LittleEndian(data[8..]);
    }
}

/// <summary>
/// How a record is laid out in a store file (little-endian):
/// <code>
/// u32 body length | u32 CRC-32C of the body, seeded with the segment's identity | body
/// body (format 2, segments whose header has <see cref="SegmentHeader.ProducerFields"/>):
///       u64 offset | i64 timestamp ms | u8 attributes
///       | if attributes bit 0: i64 producer id | i32 producer epoch | i64 sequence
///       | u32 key length | key | u16 header count
///       | per header: u16 name length | name (UTF-8) | u32 value length | value
///       | value (the rest of the body)
/// body (format 1, older segments): the same without the attributes byte and producer fields.
/// </code>
/// The offset inside the checksummed body lets recovery rebuild the index from the store alone
/// and resynchronise past a damaged region.
/// </summary>
internal static class RecordFormat
{
    public const int HeaderSize = 8;
    public const int MinBodySize = 8 + 8 + 4 + 2;
    public const int MaxBodySize = 64 * 1024 * 1024;

    /// <summary>Records without producer fields (segments written before idempotent producing).</summary>
    public const int Version1 = 1;

    /// <summary>Records with an attributes byte and, for an idempotent producer's records, its id, epoch and sequence.</summary>
    public const int Version2 = 2;

    /// <summary>The format new segments are written in.</summary>
    public const int Current = Version2;

    private const byte HasProducer = 1;
    private const int ProducerFieldsSize = 8 + 4 + 8;

    public static int BodySize(LogRecord record, int version = Current)
    {
        long size = MinBodySize + record.Key.Length + record.Value.Length;
        if (version >= Version2) size += 1 + (record.ProducerId != 0 ? ProducerFieldsSize : 0);
        foreach (var (name, value) in record.Headers)
        {
            size += 2 + Encoding.UTF8.GetByteCount(name) + 4 + value.Length;
        }
        if (size > MaxBodySize) throw new ArgumentException($"A record is at most {MaxBodySize} bytes encoded; this one is {size}.");
        if (record.Headers.Count > ushort.MaxValue) throw new ArgumentException("A record has at most 65535 headers.");
        return (int)size;
    }

    /// <summary>Writes header + body into <paramref name="destination"/> (exactly HeaderSize + bodySize bytes).</summary>
    public static void Write(Span<byte> destination, int bodySize, long offset, long timestampMs, LogRecord record, uint seed, int version = Current)
    {
        var body = destination.Slice(HeaderSize, bodySize);
        var p = 0;
        BinaryPrimitives.WriteInt64LittleEndian(body[p..], offset); p += 8;
        BinaryPrimitives.WriteInt64LittleEndian(body[p..], timestampMs); p += 8;
        if (version >= Version2)
        {
            body[p++] = record.ProducerId != 0 ? HasProducer : (byte)0;
            if (record.ProducerId != 0)
            {
                BinaryPrimitives.WriteInt64LittleEndian(body[p..], record.ProducerId); p += 8;
                BinaryPrimitives.WriteInt32LittleEndian(body[p..], record.ProducerEpoch); p += 4;
                BinaryPrimitives.WriteInt64LittleEndian(body[p..], record.Sequence); p += 8;
            }
        }
        else if (record.ProducerId != 0)
        {
            throw new InvalidOperationException("A format-1 segment cannot hold a producer's record.");
        }
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
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], Crc32C.Compute(body, seed));
    }

    /// <summary>Body length from a header, or -1 when it cannot be a record.</summary>
    public static int BodyLength(ReadOnlySpan<byte> header)
    {
        var length = BinaryPrimitives.ReadInt32LittleEndian(header);
        return length is < MinBodySize or > MaxBodySize ? -1 : length;
    }

    public static bool ChecksumMatches(ReadOnlySpan<byte> header, ReadOnlySpan<byte> body, uint seed) =>
        BinaryPrimitives.ReadUInt32LittleEndian(header[4..]) == Crc32C.Compute(body, seed);

    public static long OffsetOf(ReadOnlySpan<byte> body) => BinaryPrimitives.ReadInt64LittleEndian(body);

    public static long TimestampOf(ReadOnlySpan<byte> body) => BinaryPrimitives.ReadInt64LittleEndian(body[8..]);

    /// <summary>
    /// The format before issue 16 (docs/log.md, "Upgrading"): a store is records only, from
    /// position 0, with no segment header and no commit frames, and each CRC-32C is unseeded
    /// (which is a seed of 0). Such stores are read, never written.
    /// </summary>
    public static class Legacy
    {
        /// <summary>The CRC seed of a legacy store's records.</summary>
        public const uint Seed = 0;

        /// <summary>Where a legacy store's first record begins.</summary>
        public const int DataStart = 0;

        /// <summary>Whether a store starts with an intact legacy record of offset <paramref name="baseOffset"/> (a new store starts with its header).</summary>
        public static bool StartsWithRecord(ReadOnlySpan<byte> store, long baseOffset)
        {
            if (store.Length < HeaderSize) return false;
            var bodyLength = BodyLength(store);
            if (bodyLength < 0 || store.Length - HeaderSize < bodyLength) return false;
            var body = store.Slice(HeaderSize, bodyLength);
            return ChecksumMatches(store, body, Seed) && OffsetOf(body) == baseOffset;
        }
    }

    /// <summary>Decodes a body whose checksum matched; null when its structure is inconsistent.</summary>
    public static LogRecord? Decode(ReadOnlyMemory<byte> bodyMemory, int version = Current)
    {
        var body = bodyMemory.Span;
        var p = 16;
        long producerId = 0, sequence = 0;
        var epoch = 0;
        if (version >= Version2)
        {
            if (body.Length - p < 1 + 4 + 2) return null;
            var attributes = body[p++];
            if ((attributes & ~HasProducer) != 0) return null;
            if ((attributes & HasProducer) != 0)
            {
                if (body.Length - p < ProducerFieldsSize + 4 + 2) return null;
                producerId = BinaryPrimitives.ReadInt64LittleEndian(body[p..]); p += 8;
                epoch = BinaryPrimitives.ReadInt32LittleEndian(body[p..]); p += 4;
                sequence = BinaryPrimitives.ReadInt64LittleEndian(body[p..]); p += 8;
                if (producerId == 0) return null;
            }
        }
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
            ProducerId = producerId,
            ProducerEpoch = epoch,
            Sequence = sequence,
        };
    }
}
