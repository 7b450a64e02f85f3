using System.Buffers;
using System.IO.Pipelines;
using System.Text;

namespace Conduit.Grpc.Tests;

/// <summary>
/// AuthorityRepair copies a connection through its own pipe only until the first request header
/// block shows the connection needs no repairs; then Kestrel reads the transport itself. These
/// drive the reader Kestrel gets as Kestrel does, across that hand-over.
/// </summary>
public class AuthorityRepairHandOverTests
{
    private static readonly byte[] Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray();

    /// <summary>HEADERS with :method POST (static index 3) and a literal :authority (static name index 1).</summary>
    private static byte[] Headers(int stream, string authority)
    {
        var value = Encoding.ASCII.GetBytes(authority);
        byte[] block = [0x83, 0x01, (byte)value.Length, .. value];
        return TestHost.Http2Frame(0x1, 0x4, stream, block);
    }

    /// <summary>A connection's start: the preface, SETTINGS, and a HEADERS with <paramref name="authority"/>.</summary>
    private static byte[] Start(string authority) => [.. Preface, .. TestHost.Http2Frame(0x4, 0, 0, []), .. Headers(1, authority)];

    /// <summary>The rest: DATA frames of every size, and one more HEADERS.</summary>
    private static byte[] Rest(string authority, Random random)
    {
        var bytes = new List<byte>();
        for (var i = 0; i < 200; i++)
        {
            var payload = new byte[random.Next(0, 16385)];
            random.NextBytes(payload);
            bytes.AddRange(TestHost.Http2Frame(0x0, 0, 1, payload));
        }
        bytes.AddRange(Headers(3, authority));
        return [.. bytes];
    }

    /// <summary>Writes <paramref name="bytes"/> in pieces of 1 to <paramref name="maxPiece"/> bytes, some flushed apart.</summary>
    private static async Task WriteInPieces(PipeWriter writer, byte[] bytes, Random random, int maxPiece)
    {
        for (var at = 0; at < bytes.Length;)
        {
            var n = Math.Min(bytes.Length - at, random.Next(1, maxPiece + 1));
            await writer.WriteAsync(bytes.AsMemory(at, n));
            at += n;
            if (random.Next(4) == 0) await Task.Yield();
        }
    }

    /// <summary>Reads as Kestrel does: consumes whole frames (here: a random part), examines all, until the end.</summary>
    private static async Task<byte[]> ReadAll(PipeReader reader, Random random)
    {
        var read = new List<byte>();
        while (true)
        {
            var result = await reader.ReadAsync();
            Assert.False(result.IsCanceled);
            var buffer = result.Buffer;
            var take = result.IsCompleted ? buffer.Length : random.NextInt64(0, buffer.Length + 1);
            read.AddRange(buffer.Slice(0, take).ToArray());
            reader.AdvanceTo(buffer.GetPosition(take), buffer.End);
            if (result.IsCompleted) break;
        }
        await reader.CompleteAsync();
        return [.. read];
    }

    [Theory]
    [InlineData("127.0.0.1:5000", 1)]
    [InlineData("127.0.0.1:5000", 2)]
    [InlineData("127.0.0.1:5000", 3)]
    [InlineData("ipv4:127.0.0.1:5001,127.0.0.1:5002", 4)] // repaired: the pump stays
    public async Task Every_byte_reaches_Kestrel_once_and_in_order_across_the_hand_over(string authority, int seed)
    {
        var random = new Random(seed);
        var repaired = authority.Contains(',', StringComparison.Ordinal);
        var start = Start(authority);
        var rest = Rest(authority, random);
        var transport = new Pipe();
        var (input, pump) = AuthorityRepair.Wrap(transport.Reader, null);
        var reading = ReadAll(input, random);
        // The start a few bytes at a time, so the pump meets every cut of the preface and the header block.
        await WriteInPieces(transport.Writer, start, random, maxPiece: 7);
        if (repaired)
        {
            Assert.False(pump.IsCompleted);
        }
        else
        {
            // Handed over after the first valid header block, with the transport still open.
            await pump.WaitAsync(TimeSpan.FromSeconds(10));
        }
        await WriteInPieces(transport.Writer, rest, random, maxPiece: 40000);
        await transport.Writer.CompleteAsync();
        var read = await reading.WaitAsync(TimeSpan.FromSeconds(30));
        await pump.WaitAsync(TimeSpan.FromSeconds(10));
        byte[] bytes = [.. start, .. rest];
        if (repaired)
        {
            // Same length, the :authority made a host ("ipv4-127.0.0.1-5001-127.0.0.1-5002").
            Assert.Equal(bytes.Length, read.Length);
            Assert.Contains("ipv4-127.0.0.1-5001-127.0.0.1-5002", Encoding.ASCII.GetString(read), StringComparison.Ordinal);
            Assert.DoesNotContain("ipv4:127.0.0.1:5001,127.0.0.1:5002", Encoding.ASCII.GetString(read), StringComparison.Ordinal);
        }
        else
        {
            Assert.Equal(bytes, read);
        }
    }

    [Fact]
    public async Task A_read_pending_on_the_transport_after_the_hand_over_is_cancelled()
    {
        var transport = new Pipe();
        var (input, pump) = AuthorityRepair.Wrap(transport.Reader, null);
        var start = Preface.Concat(TestHost.Http2Frame(0x4, 0, 0, [])).Concat(Headers(1, "localhost:5000")).ToArray();
        await transport.Writer.WriteAsync(start);
        await pump.WaitAsync(TimeSpan.FromSeconds(10)); // handed over after the valid :authority
        // A cancellation before Kestrel has read what the pump passed: one cancelled read, no more.
        input.CancelPendingRead();
        var early = await input.ReadAsync();
        Assert.True(early.IsCanceled);
        input.AdvanceTo(early.Buffer.Start);
        var first = await input.ReadAsync();
        Assert.False(first.IsCanceled);
        Assert.Equal(start.Length, first.Buffer.Length);
        Assert.False(first.IsCompleted);
        input.AdvanceTo(first.Buffer.End);
        var pending = input.ReadAsync().AsTask();
        await Task.Delay(50);
        Assert.False(pending.IsCompleted);
        input.CancelPendingRead();
        var cancelled = await pending.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(cancelled.IsCanceled);
        input.AdvanceTo(cancelled.Buffer.End);
        // The transport's bytes still come after the cancellation.
        await transport.Writer.WriteAsync(TestHost.Http2Frame(0x6, 0, 0, new byte[8]));
        var ping = await input.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(17, ping.Buffer.Length);
        input.AdvanceTo(ping.Buffer.End);
        await input.CompleteAsync();
        // Kestrel completing the reader after the hand-over completes the transport's.
        var flush = await transport.Writer.WriteAsync(new byte[1]);
        Assert.True(flush.IsCompleted);
    }

    [Fact]
    public async Task A_reader_completed_before_the_hand_over_ends_the_pump_and_the_transport()
    {
        var transport = new Pipe();
        var (input, pump) = AuthorityRepair.Wrap(transport.Reader, null);
        await transport.Writer.WriteAsync(Preface);
        var read = await input.ReadAsync();
        Assert.Equal(Preface.Length, read.Buffer.Length);
        input.AdvanceTo(read.Buffer.End);
        await input.CompleteAsync();
        // A valid header block: the pump would hand over, but Kestrel is gone, so it ends instead.
        await transport.Writer.WriteAsync(TestHost.Http2Frame(0x4, 0, 0, []).Concat(Headers(1, "localhost:5000")).ToArray());
        await pump.WaitAsync(TimeSpan.FromSeconds(10));
        var flush = await transport.Writer.WriteAsync(new byte[1]);
        Assert.True(flush.IsCompleted);
    }
}
