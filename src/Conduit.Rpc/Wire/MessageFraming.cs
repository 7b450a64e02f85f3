using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using Google.Protobuf;

namespace Conduit.Rpc.Wire;

/// <summary>One message read from a stream of length-prefixed frames.</summary>
internal readonly record struct ReadResult<T>(bool HasMessage, T Message, bool WasCompressed);

/// <summary>
/// The gRPC length-prefixed message: a compressed flag byte, a 4-byte big-endian length, then the
/// message. Messages are parsed straight from the PipeReader's buffer and serialized straight
/// into the PipeWriter; only compression goes through a pooled intermediate buffer.
/// </summary>
internal static class MessageFraming
{
    // The writer SerializeFrame serializes through, one per thread: taken out while in use (a
    // marshaller that itself serializes on this thread gets a new one), its buffer kept up to 64 KiB.
    [ThreadStatic]
    private static PooledBufferWriter? t_frameWriter;

    /// <summary>One framed message in an array of its own (exactly its size).</summary>
    public static byte[] SerializeFrame<T>(T message, Marshaller<T> marshaller, ICompressionProvider? compression, int maxSize)
    {
        var writer = t_frameWriter ?? new PooledBufferWriter();
        t_frameWriter = null;
        try
        {
            WriteMessage(writer, message, marshaller, compression, maxSize);
            return writer.WrittenSpan.ToArray();
        }
        finally
        {
            if (writer.WorthKeeping)
            {
                writer.Clear();
                t_frameWriter = writer;
            }
            else
            {
                writer.Dispose();
            }
        }
    }

    /// <summary>Serializes one framed message into <paramref name="output"/> (not flushed).</summary>
    public static void WriteMessage<T>(IBufferWriter<byte> output, T message, Marshaller<T> marshaller, ICompressionProvider? compression, int maxSize)
    {
        if (compression is null)
        {
            var size = marshaller.CalculateSize(message);
            CheckSendSize(size, maxSize);
            var header = output.GetSpan(GrpcProtocol.HeaderSize);
            header[0] = 0;
            BinaryPrimitives.WriteUInt32BigEndian(header.Slice(1), (uint)size);
            output.Advance(GrpcProtocol.HeaderSize);
            if (size > 0) marshaller.Serialize(message, output);
            return;
        }

        using var raw = new PooledBufferWriter(Math.Max(256, marshaller.CalculateSize(message)));
        marshaller.Serialize(message, raw);
        using var compressed = new PooledBufferWriter(Math.Max(256, raw.WrittenCount / 2));
        using (var stream = compression.CreateCompressionStream(compressed.AsStream()))
        {
            stream.Write(raw.WrittenSpan);
        }
        CheckSendSize(compressed.WrittenCount, maxSize);
        var span = output.GetSpan(GrpcProtocol.HeaderSize + compressed.WrittenCount);
        span[0] = 1;
        BinaryPrimitives.WriteUInt32BigEndian(span.Slice(1), (uint)compressed.WrittenCount);
        compressed.WrittenSpan.CopyTo(span.Slice(GrpcProtocol.HeaderSize));
        output.Advance(GrpcProtocol.HeaderSize + compressed.WrittenCount);
    }

    /// <summary>
    /// Reads the next message. Returns HasMessage = false at a clean end of stream. Throws
    /// RpcException: INTERNAL for a truncated or malformed frame or message, RESOURCE_EXHAUSTED
    /// for one larger than <paramref name="maxSize"/>.
    /// </summary>
    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder<>))]
    public static async ValueTask<ReadResult<T>> ReadMessageAsync<T>(
        PipeReader reader, Marshaller<T> marshaller, ICompressionProvider? decompressor, int maxSize, string direction, CancellationToken cancellationToken)
    {
        while (true)
        {
            var result = await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            var buffer = result.Buffer;
            bool complete;
            bool compressed;
            ReadOnlySequence<byte> payload;
            try
            {
                complete = TryReadFrame(buffer, maxSize, direction, out compressed, out payload);
            }
            catch (RpcException)
            {
                // Every ReadAsync is paired with an AdvanceTo, or the next read fails.
                reader.AdvanceTo(buffer.Start);
                throw;
            }
            if (complete)
            {
                try
                {
                    var message = Decode(payload, compressed, marshaller, decompressor, maxSize, direction);
                    return new ReadResult<T>(true, message, compressed);
                }
                finally
                {
                    reader.AdvanceTo(payload.End);
                }
            }
            if (result.IsCompleted)
            {
                var leftover = buffer.Length;
                reader.AdvanceTo(buffer.End);
                if (leftover == 0) return default;
                throw new RpcException(StatusCode.Internal, $"Incomplete {direction} message: the stream ended inside a frame.");
            }
            reader.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCanceled) throw new OperationCanceledException(cancellationToken);
        }
    }

    /// <summary>
    /// Decodes the message at the start of <paramref name="buffer"/> if its frame is complete,
    /// with the checks and errors of <see cref="ReadMessageAsync"/>; <paramref name="consumed"/>
    /// is the frame's length.
    /// </summary>
    internal static bool TryReadMessage<T>(ReadOnlySequence<byte> buffer, Marshaller<T> marshaller, ICompressionProvider? decompressor, int maxSize, string direction, out T message, out int consumed)
    {
        if (!TryReadFrame(buffer, maxSize, direction, out var compressed, out var payload))
        {
            (message, consumed) = (default!, 0);
            return false;
        }
        message = Decode(payload, compressed, marshaller, decompressor, maxSize, direction);
        consumed = GrpcProtocol.HeaderSize + (int)payload.Length;
        return true;
    }

    internal static bool TryReadFrame(ReadOnlySequence<byte> buffer, int maxSize, string direction, out bool compressed, out ReadOnlySequence<byte> payload)
    {
        compressed = false;
        payload = default;
        if (buffer.Length < GrpcProtocol.HeaderSize) return false;
        Span<byte> header = stackalloc byte[GrpcProtocol.HeaderSize];
        buffer.Slice(0, GrpcProtocol.HeaderSize).CopyTo(header);
        compressed = header[0] switch
        {
            0 => false,
            1 => true,
            _ => throw new RpcException(StatusCode.Internal, $"Invalid compressed flag {header[0]} in {direction} message frame."),
        };
        var length = BinaryPrimitives.ReadUInt32BigEndian(header.Slice(1));
        if (length > (uint)maxSize)
        {
            throw new RpcException(StatusCode.ResourceExhausted, $"Received {direction} message larger than max ({length} vs. {maxSize})");
        }
        if (buffer.Length < GrpcProtocol.HeaderSize + length) return false;
        payload = buffer.Slice(GrpcProtocol.HeaderSize, length);
        return true;
    }

    private static T Decode<T>(ReadOnlySequence<byte> payload, bool compressed, Marshaller<T> marshaller, ICompressionProvider? decompressor, int maxSize, string direction)
    {
        if (!compressed) return Deserialize(payload, marshaller, direction);
        if (decompressor is null)
        {
            throw new RpcException(StatusCode.Internal, $"A {direction} message has the compressed flag set but the call has no grpc-encoding.");
        }
        using var decompressed = new PooledBufferWriter((int)Math.Min(maxSize, Math.Max(256, payload.Length * 4)));
        try
        {
            using var stream = decompressor.CreateDecompressionStream(new SequenceStream(payload));
            while (true)
            {
                var span = decompressed.GetSpan(4096);
                var n = stream.Read(span);
                if (n == 0) break;
                decompressed.Advance(n);
                if (decompressed.WrittenCount > maxSize)
                {
                    throw new RpcException(StatusCode.ResourceExhausted, $"Received {direction} message larger than max after decompression (more than {maxSize} bytes)");
                }
            }
        }
        catch (InvalidDataException ex)
        {
            throw new RpcException(new Status(StatusCode.Internal, $"Could not decompress {direction} message with {decompressor.EncodingName}."), message: null, innerException: ex);
        }
        return Deserialize(new ReadOnlySequence<byte>(decompressed.WrittenMemory), marshaller, direction);
    }

    private static T Deserialize<T>(ReadOnlySequence<byte> payload, Marshaller<T> marshaller, string direction)
    {
        try
        {
            return marshaller.Deserialize(payload);
        }
        catch (InvalidProtocolBufferException ex)
        {
            throw new RpcException(new Status(StatusCode.Internal, $"Failed to deserialize {direction} message."), message: null, innerException: ex);
        }
    }

    private static void CheckSendSize(int size, int maxSize)
    {
        if (size > maxSize)
        {
            throw new RpcException(StatusCode.ResourceExhausted, $"Sending message larger than max ({size} vs. {maxSize})");
        }
    }
}
