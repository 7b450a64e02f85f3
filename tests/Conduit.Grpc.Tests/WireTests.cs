using System.Buffers;
using System.IO.Pipelines;
using Conduit.Protos.Grpc.Testing;
using Conduit.Rpc.Wire;
using Google.Protobuf;

namespace Conduit.Rpc.Tests;

/// <summary>The wire format alone: frames, timeouts, header encodings.</summary>
public class WireTests
{
    private static readonly Marshaller<SimpleRequest> RequestMarshaller = Marshallers.Protobuf(SimpleRequest.Parser);

    [Theory]
    [InlineData("1H", 36_000_000_000L)]
    [InlineData("2M", 1_200_000_000L)]
    [InlineData("3S", 30_000_000L)]
    [InlineData("250m", 2_500_000L)]
    [InlineData("7u", 70L)]
    [InlineData("500n", 5L)]
    [InlineData("99999999S", 999_999_990_000_000L)]
    public void Timeout_parses_every_unit(string text, long ticks)
    {
        Assert.True(GrpcTimeout.TryParse(text, out var timeout));
        Assert.Equal(ticks, timeout.Ticks);
    }

    [Theory]
    [InlineData("")]
    [InlineData("S")]
    [InlineData("10")]
    [InlineData("123456789S")]
    [InlineData("-1S")]
    [InlineData("1.5S")]
    [InlineData("10x")]
    [InlineData(" 1S")]
    public void Timeout_rejects_malformed_values(string text) => Assert.False(GrpcTimeout.TryParse(text, out _));

    [Fact]
    public void Timeout_format_round_trips_and_never_exceeds_eight_digits()
    {
        foreach (var timeout in new[] { TimeSpan.FromTicks(1), TimeSpan.FromMilliseconds(1), TimeSpan.FromSeconds(30), TimeSpan.FromHours(5), TimeSpan.FromDays(3000) })
        {
            var text = GrpcTimeout.Format(timeout);
            Assert.True(text.Length <= 9, text);
            Assert.True(GrpcTimeout.TryParse(text, out var parsed), text);
            Assert.True(parsed >= timeout, $"{text} rounds down {timeout}");
        }
    }

    [Fact]
    public void Status_message_is_percent_encoded_as_utf8_and_decoded_back()
    {
        const string message = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n 100%";
        var encoded = HeaderEncoding.PercentEncode(message);
        Assert.All(encoded, c => Assert.InRange(c, (char)0x20, (char)0x7E));
        Assert.Contains("%25", encoded);
        Assert.Equal(message, HeaderEncoding.PercentDecode(encoded));
        Assert.Equal("plain", HeaderEncoding.PercentEncode("plain"));
        Assert.Equal("bad %zz escape %", HeaderEncoding.PercentDecode("bad %zz escape %"));
    }

    [Theory]
    [InlineData("q6ur", new byte[] { 0xab, 0xab, 0xab })]
    [InlineData("AQ", new byte[] { 1 })]
    [InlineData("AQ==", new byte[] { 1 })]
    [InlineData("AQI", new byte[] { 1, 2 })]
    [InlineData("AQI=", new byte[] { 1, 2 })]
    public void Binary_header_values_decode_padded_or_not(string text, byte[] expected) => Assert.Equal(expected, HeaderEncoding.FromBase64(text));

    [Fact]
    public void Metadata_rejects_bad_keys_and_values()
    {
        Assert.Throws<ArgumentException>(() => new Metadata().Add("bad key", "v"));
        Assert.Throws<ArgumentException>(() => new Metadata().Add("key", "new\nline"));
        Assert.Throws<ArgumentException>(() => new Metadata().Add("key-bin", "text"));
        Assert.Throws<ArgumentException>(() => new Metadata().Add("key", [1, 2]));
        var metadata = new Metadata().Add("Mixed-Case", "v").Add("data-bin", [0, 255]);
        Assert.Equal("v", metadata.GetValue("mixed-case"));
        Assert.Equal(new byte[] { 0, 255 }, metadata.GetValueBytes("data-bin"));
    }

    [Fact]
    public async Task Frames_split_across_reads_are_reassembled()
    {
        var request = new SimpleRequest { ResponseSize = 42, Payload = new Payload { Body = ByteString.CopyFrom(new byte[1000]) } };
        var bytes = TestHost.Frame(request).Concat(TestHost.Frame(request)).ToArray();
        var pipe = new Pipe();
        var writing = Task.Run(async () =>
        {
            foreach (var b in bytes)
            {
                await pipe.Writer.WriteAsync(new[] { b });
            }
            await pipe.Writer.CompleteAsync();
        });
        for (var i = 0; i < 2; i++)
        {
            var result = await MessageFraming.ReadMessageAsync(pipe.Reader, RequestMarshaller, null, 4096, "request", default);
            Assert.True(result.HasMessage);
            Assert.Equal(request, result.Message);
        }
        Assert.False((await MessageFraming.ReadMessageAsync(pipe.Reader, RequestMarshaller, null, 4096, "request", default)).HasMessage);
        await writing;
    }

    [Fact]
    public async Task Zero_length_message_is_a_default_message()
    {
        var result = await ReadAsync(TestHost.Frame([]));
        Assert.True(result.HasMessage);
        Assert.Equal(new SimpleRequest(), result.Message);
    }

    [Fact]
    public async Task Oversized_message_is_resource_exhausted_before_it_is_read()
    {
        var header = new byte[] { 0, 0x7f, 0xff, 0xff, 0xff };
        var ex = await Assert.ThrowsAsync<RpcException>(() => ReadAsync(header, maxSize: 1024).AsTask());
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
    }

    [Theory]
    [InlineData(new byte[] { 0, 0, 0, 0, 10, 1, 2 })]          // stream ends inside a frame
    [InlineData(new byte[] { 2, 0, 0, 0, 0 })]                 // invalid compressed flag
    [InlineData(new byte[] { 1, 0, 0, 0, 1, 0 })]              // compressed, but no grpc-encoding
    [InlineData(new byte[] { 0, 0, 0, 0, 2, 0x0a, 0x05 })]     // truncated protobuf
    public async Task Malformed_frames_and_messages_are_internal(byte[] bytes)
    {
        var ex = await Assert.ThrowsAsync<RpcException>(() => ReadAsync(bytes).AsTask());
        Assert.Equal(StatusCode.Internal, ex.StatusCode);
    }

    [Theory]
    [InlineData("gzip")]
    [InlineData("deflate")]
    public async Task Compressed_messages_round_trip(string encoding)
    {
        Assert.True(CompressionProviders.Default.TryGet(encoding, out var provider));
        var request = new SimpleRequest { Payload = new Payload { Body = ByteString.CopyFrom(new byte[50_000]) } };
        var writer = new ArrayBufferWriter<byte>();
        MessageFraming.WriteMessage(writer, request, RequestMarshaller, provider, int.MaxValue);
        Assert.Equal(1, writer.WrittenSpan[0]);
        Assert.True(writer.WrittenCount < 5_000, "zeros compress well");
        var result = await ReadAsync(writer.WrittenSpan.ToArray(), decompressor: provider, maxSize: 100_000);
        Assert.True(result.WasCompressed);
        Assert.Equal(request, result.Message);
    }

    [Fact]
    public async Task Decompression_bombs_stop_at_the_receive_limit()
    {
        CompressionProviders.Default.TryGet("gzip", out var gzip);
        var request = new SimpleRequest { Payload = new Payload { Body = ByteString.CopyFrom(new byte[1_000_000]) } };
        var writer = new ArrayBufferWriter<byte>();
        MessageFraming.WriteMessage(writer, request, RequestMarshaller, gzip, int.MaxValue);
        var ex = await Assert.ThrowsAsync<RpcException>(() => ReadAsync(writer.WrittenSpan.ToArray(), decompressor: gzip, maxSize: 100_000).AsTask());
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
    }

    [Fact]
    public async Task A_rejected_frame_leaves_the_reader_usable()
    {
        // Every ReadAsync must be paired with AdvanceTo, also when the frame is refused, or the
        // next read fails with "Reading is already in progress".
        var pipe = new Pipe();
        await pipe.Writer.WriteAsync(new byte[] { 0, 0x7f, 0xff, 0xff, 0xff });
        var ex = await Assert.ThrowsAsync<RpcException>(() => MessageFraming.ReadMessageAsync(pipe.Reader, RequestMarshaller, null, 1024, "request", default).AsTask());
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        await pipe.Writer.CompleteAsync();
        var result = await pipe.Reader.ReadAsync();
        pipe.Reader.AdvanceTo(result.Buffer.End);
    }

    [Fact]
    public void Sending_more_than_the_send_limit_is_resource_exhausted()
    {
        var request = new SimpleRequest { Payload = new Payload { Body = ByteString.CopyFrom(new byte[2000]) } };
        var ex = Assert.Throws<RpcException>(() => MessageFraming.WriteMessage(new ArrayBufferWriter<byte>(), request, RequestMarshaller, null, 1000));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
    }

    private static async ValueTask<ReadResult<SimpleRequest>> ReadAsync(byte[] bytes, ICompressionProvider? decompressor = null, int maxSize = 4096)
    {
        var reader = PipeReader.Create(new ReadOnlySequence<byte>(bytes));
        return await MessageFraming.ReadMessageAsync(reader, RequestMarshaller, decompressor, maxSize, "request", default);
    }
}
