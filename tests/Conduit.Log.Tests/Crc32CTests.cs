using System.Text;
using Conduit.Storage.Log;
using Xunit;

namespace Conduit.Log.Tests;

/// <summary>
/// Every checksum on disk is CRC-32C (Castagnoli): the store's records, commit frames, segment
/// headers, checkpoints. The fast path (three interleaved streams, combined) must give exactly
/// what the definition gives, for every length and seed, or stored data would read as damaged.
/// </summary>
public class Crc32CTests
{
    /// <summary>The definition, bit by bit (reflected polynomial 0x82F63B78), as slow as it is plain.</summary>
    private static uint Reference(ReadOnlySpan<byte> data, uint seed)
    {
        var crc = ~seed;
        foreach (var b in data)
        {
            crc ^= b;
            for (var i = 0; i < 8; i++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        }
        return ~crc;
    }

    [Fact]
    public void The_standard_check_value()
    {
        Assert.Equal(0xE3069283u, Crc32C.Compute("123456789"u8));
        Assert.Equal(0u, Crc32C.Compute([]));
    }

    [Fact]
    public void Every_length_and_offset_gives_the_definitions_checksum()
    {
        var random = new Random(1234);
        var data = new byte[40_000];
        random.NextBytes(data);
        // Around each size the fast path switches at (3 x 128 B and 3 x 1 KiB blocks), and beyond.
        var lengths = Enumerable.Range(0, 400)
            .Concat(Enumerable.Range(3 * 128 - 9, 18)).Concat(Enumerable.Range(3 * 1024 - 9, 18))
            .Concat(Enumerable.Range(6 * 1024 - 9, 18)).Concat([4096, 4096 + 22, 4096 + 51, 8192, 12_345, 33_333, 39_999]);
        foreach (var length in lengths)
        {
            var start = random.Next(0, 8); // unaligned starts too
            var slice = data.AsSpan(start, Math.Min(length, data.Length - start));
            var seed = (uint)random.Next();
            Assert.Equal(Reference(slice, seed), Crc32C.Compute(slice, seed));
            Assert.Equal(Reference(slice, 0), Crc32C.Compute(slice));
        }
    }

    [Fact]
    public void A_seed_is_the_checksum_of_a_prefix()
    {
        var data = Encoding.UTF8.GetBytes(string.Concat(Enumerable.Repeat("conduit log record ", 500)));
        foreach (var cut in new[] { 0, 1, 7, 100, 3 * 1024, data.Length })
        {
            Assert.Equal(Crc32C.Compute(data), Crc32C.Compute(data.AsSpan(cut), Crc32C.Compute(data.AsSpan(0, cut))));
        }
    }
}
