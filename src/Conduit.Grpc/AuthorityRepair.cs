using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Conduit.Grpc;

/// <summary>
/// Lets Kestrel take HTTP/2 calls whose <c>:authority</c> is not a valid host, as every C-core
/// (grpcio), grpc-go and grpc-java server does: grpcio's round_robin over
/// <c>ipv4:127.0.0.1:5001,127.0.0.1:5002</c> sends that very comma list, a unix-socket client its
/// socket path. Kestrel resets such a stream with PROTOCOL_ERROR (the client sees INTERNAL
/// "RST_STREAM error code 1") and has no setting to allow it. This connection middleware sits in
/// front of Kestrel's HTTP/2 parser and rewrites such an <c>:authority</c> in the request's HPACK
/// header block into a valid host of the same length (each character outside letters, digits,
/// '.' and '-' becomes '-': "127.0.0.1-5001-127.0.0.1-5002"), so Kestrel's dynamic header table
/// (whose entry sizes count value lengths) stays exactly the client's. gRPC services do not
/// look at the host.
/// <para>
/// Cost: frames are parsed, and copied through one extra pipe, only until the first request
/// header block: when its <c>:authority</c> is valid (or the connection is not HTTP/2 with prior
/// knowledge) Kestrel reads the rest from the transport itself; when it was repaired, every later
/// header block is inspected too, and the connection's bytes keep passing through the pipe.
/// </para>
/// </summary>
public static class AuthorityRepair
{
    /// <summary>Adds the middleware; after <c>UseHttps</c>, so it sees the decrypted bytes.</summary>
    public static ListenOptions UseAuthorityRepair(this ListenOptions listen)
    {
        ArgumentNullException.ThrowIfNull(listen);
        listen.Use(next => context => Run(context, next));
        return listen;
    }

    private static async Task Run(ConnectionContext context, ConnectionDelegate next)
    {
        var transport = context.Transport;
        // In the connection's own blocks (TransportBlocks), not the shared pool's 4 KiB ones.
        var (input, pump) = Wrap(transport.Input, context.Features.Get<Microsoft.AspNetCore.Connections.Features.IMemoryPoolFeature>()?.MemoryPool);
        context.Transport = new Duplex(input, transport.Output);
        try
        {
            await next(context).ConfigureAwait(false);
        }
        finally
        {
            context.Transport = transport;
            // Kestrel's HTTP/1.1 connections do not complete their input: without this, a pump
            // waiting on a full pipe nobody reads would wait forever.
            await input.CompleteAsync().ConfigureAwait(false);
            if (!pump.IsCompleted) transport.Input.CancelPendingRead();
            await pump.ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The reader Kestrel gets in place of <paramref name="source"/>, and the pump that feeds it
    /// until the connection needs no more repairs (then the reader reads <paramref name="source"/>
    /// itself). Internal for tests.
    /// </summary>
    internal static (PipeReader Input, Task Pump) Wrap(PipeReader source, MemoryPool<byte>? pool)
    {
        var inbound = new Pipe(new PipeOptions(pool: pool, useSynchronizationContext: false));
        var input = new HandOverReader(inbound.Reader, source);
        return (input, Pump(source, inbound.Writer, input));
    }

    private sealed class Duplex(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }

    /// <summary>
    /// Reads the repaired bytes from the pump's pipe; once the pump has handed over (the
    /// connection needs no more repairs) and that pipe is drained, the transport itself. The pump
    /// only ever passes whole frames before it hands over, so the bytes Kestrel has not consumed
    /// are all in one place at the switch. Without the hand-over every byte of every connection
    /// was copied once more, and each read took one more thread-pool hop (docs/performance.md,
    /// "AuthorityRepair hands over").
    /// </summary>
    private sealed class HandOverReader(PipeReader inbound, PipeReader source) : PipeReader
    {
        private const int PumpOwnsSource = 0, HandedOver = 1, CompletedFirst = 2;
        private readonly Lock _gate = new();
        private int _state;
        private volatile bool _direct;
        private bool _cancelled;

        private bool IsHandedOver => Volatile.Read(ref _state) == HandedOver;

        /// <summary>
        /// Called by the pump before it completes the pipe, instead of an end of stream. False when
        /// Kestrel has completed this reader already: the transport's reader is then the pump's to complete.
        /// </summary>
        public bool TryHandOver() => Interlocked.CompareExchange(ref _state, HandedOver, PumpOwnsSource) == PumpOwnsSource;

        /// <summary>After the hand-over, the transport's own read: no layer, no allocation.</summary>
        public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default) =>
            _direct ? source.ReadAsync(cancellationToken) : ReadBeforeHandOverAsync(cancellationToken);

        private async ValueTask<ReadResult> ReadBeforeHandOverAsync(CancellationToken cancellationToken)
        {
            var result = await inbound.ReadAsync(cancellationToken).ConfigureAwait(false);
            if (result.IsCanceled)
            {
                lock (_gate) _cancelled = false;
            }
            if (!result.IsCompleted || !IsHandedOver) return result;
            // The pump passes whole frames only, which Kestrel consumes whole: what is left here
            // is read again at once (the pipe is completed), never waited on.
            if (!result.Buffer.IsEmpty || result.IsCanceled) return new ReadResult(result.Buffer, result.IsCanceled, isCompleted: false);
            await inbound.CompleteAsync().ConfigureAwait(false);
            lock (_gate)
            {
                _direct = true;
                // A cancellation that reached the drained pipe is the transport's now.
                if (_cancelled) source.CancelPendingRead();
                _cancelled = false;
            }
            return await source.ReadAsync(cancellationToken).ConfigureAwait(false);
        }

        public override bool TryRead(out ReadResult result)
        {
            if (_direct) return source.TryRead(out result);
            if (!inbound.TryRead(out result)) return false;
            if (result.IsCompleted && IsHandedOver)
            {
                if (result.Buffer.IsEmpty && !result.IsCanceled)
                {
                    // Drained: the next ReadAsync switches to the transport.
                    inbound.AdvanceTo(result.Buffer.End);
                    result = default;
                    return false;
                }
                result = new ReadResult(result.Buffer, result.IsCanceled, isCompleted: false);
            }
            return true;
        }

        public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

        public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
        {
            if (_direct) source.AdvanceTo(consumed, examined);
            else inbound.AdvanceTo(consumed, examined);
        }

        public override void CancelPendingRead()
        {
            lock (_gate)
            {
                if (_direct)
                {
                    source.CancelPendingRead();
                }
                else
                {
                    _cancelled = true;
                    inbound.CancelPendingRead();
                }
            }
        }

        public override void Complete(Exception? exception = null)
        {
            inbound.Complete(exception);
            // Before the hand-over the pump owns the transport's reader, and completes it when it sees this.
            if (Interlocked.CompareExchange(ref _state, CompletedFirst, PumpOwnsSource) == HandedOver) source.Complete(exception);
        }
    }

    private static readonly byte[] Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray();

    private enum Mode { Preface, Frames, Repairing, Copy }

    /// <summary>
    /// Copies whole frames from <paramref name="source"/> to <paramref name="target"/>, repairing
    /// header blocks, until the connection needs no more repairs (<see cref="Mode.Copy"/>): then it
    /// hands the rest of <paramref name="source"/> over to <paramref name="reader"/> and stops.
    /// </summary>
    private static async Task Pump(PipeReader source, PipeWriter target, HandOverReader reader)
    {
        Exception? error = null;
        var mode = Mode.Preface;
        try
        {
            while (true)
            {
                var result = await source.ReadAsync().ConfigureAwait(false);
                if (result.IsCanceled) break;
                var buffer = result.Buffer;
                var consumed = Process(ref mode, buffer, target);
                if (mode == Mode.Copy)
                {
                    // Not examined: Kestrel's first read of the transport returns the rest at once.
                    source.AdvanceTo(consumed);
                    await target.FlushAsync().ConfigureAwait(false);
                    if (!reader.TryHandOver()) break; // Kestrel is done with the connection
                    await target.CompleteAsync().ConfigureAwait(false);
                    return;
                }
                source.AdvanceTo(consumed, buffer.End);
                var flush = await target.FlushAsync().ConfigureAwait(false);
                if (flush.IsCompleted || flush.IsCanceled) break;
                if (result.IsCompleted)
                {
                    // An unfinished frame at the end is passed on as it is: Kestrel reports it.
                    if (!buffer.Slice(consumed).IsEmpty)
                    {
                        foreach (var segment in buffer.Slice(consumed)) target.Write(segment.Span);
                        await target.FlushAsync().ConfigureAwait(false);
                    }
                    break;
                }
            }
        }
        catch (Exception ex)
        {
            error = ex;
        }
        await target.CompleteAsync(error).ConfigureAwait(false);
        await source.CompleteAsync().ConfigureAwait(false);
    }

    /// <summary>Passes on the whole units in <paramref name="buffer"/>; gives how far it got.</summary>
    private static SequencePosition Process(ref Mode mode, ReadOnlySequence<byte> buffer, PipeWriter target)
    {
        var reader = new SequenceReader<byte>(buffer);
        if (mode == Mode.Preface)
        {
            var n = (int)Math.Min(buffer.Length, Preface.Length);
            Span<byte> start = stackalloc byte[Preface.Length];
            buffer.Slice(0, n).CopyTo(start);
            if (!start[..n].SequenceEqual(Preface.AsSpan(0, n)))
            {
                mode = Mode.Copy; // HTTP/1.1, or not HTTP at all: not ours to look at.
                return buffer.Start;
            }
            if (n < Preface.Length) return buffer.Start;
            target.Write(Preface);
            reader.Advance(Preface.Length);
            mode = Mode.Frames;
        }
        while (true)
        {
            var frameStart = reader.Position;
            if (!TryReadHeaderBlock(ref reader, out var frames, out var type))
            {
                // A unit larger than any Kestrel takes (16 KiB frames, 32 KiB of headers by
                // default) is not waited for: passed on as it is, so Kestrel refuses it at once
                // instead of the connection stalling while its bytes pile up here.
                if (buffer.Slice(frameStart).Length > MaxUnitBytes) mode = Mode.Copy;
                return frameStart;
            }
            if (type != HeadersType)
            {
                foreach (var segment in frames) target.Write(segment.Span);
                continue;
            }
            var outcome = Inspect(frames, target);
            if (outcome == Outcome.Repaired) mode = Mode.Repairing;
            else if (outcome == Outcome.Valid && mode == Mode.Frames) mode = Mode.Copy;
            else if (outcome == Outcome.Unparsable) mode = Mode.Copy;
            if (mode == Mode.Copy) return reader.Position;
        }
    }

    private const byte HeadersType = 0x1;
    private const byte ContinuationType = 0x9;
    private const byte EndStream = 0x1;
    private const byte EndHeaders = 0x4;
    private const byte Padded = 0x8;
    private const byte Priority = 0x20;
    private const int MinMaxFrameSize = 16384;

    /// <summary>The most a header block (or frame) may take before the repairer stops waiting for its end and only copies.</summary>
    private const int MaxUnitBytes = 128 * 1024;

    /// <summary>One frame, or a HEADERS frame with all its CONTINUATION frames, when all of it is here.</summary>
    private static bool TryReadHeaderBlock(ref SequenceReader<byte> reader, out ReadOnlySequence<byte> frames, out byte firstType)
    {
        frames = default;
        firstType = 0;
        var start = reader.Position;
        var probe = reader;
        var first = true;
        Span<byte> header = stackalloc byte[9];
        while (true)
        {
            if (!probe.TryCopyTo(header)) return false;
            var length = (header[0] << 16) | (header[1] << 8) | header[2];
            var type = header[3];
            var flags = header[4];
            if (probe.Remaining < 9 + length) return false;
            probe.Advance(9 + length);
            if (first)
            {
                firstType = type;
                first = false;
                // A HEADERS frame is complete with END_HEADERS; anything else is one frame.
                if (type != HeadersType || (flags & EndHeaders) != 0) break;
                continue;
            }
            if (type != ContinuationType)
            {
                firstType = 0xff; // a protocol error: passed on as it is, for Kestrel to report
                break;
            }
            if ((flags & EndHeaders) != 0) break;
        }
        frames = reader.Sequence.Slice(start, probe.Position);
        reader = probe;
        return true;
    }

    internal enum Outcome { NoAuthority, Valid, Repaired, Unparsable }

    /// <summary>Writes the header block's frames, repaired if their :authority needs it.</summary>
    private static Outcome Inspect(ReadOnlySequence<byte> frames, PipeWriter target)
    {
        var bytes = frames.ToArray();
        var streamId = 0;
        byte firstFlags = 0;
        byte[]? priority = null;
        var block = new List<byte>(bytes.Length);
        for (var offset = 0; offset < bytes.Length;)
        {
            var length = (bytes[offset] << 16) | (bytes[offset + 1] << 8) | bytes[offset + 2];
            var flags = bytes[offset + 4];
            var payload = bytes.AsSpan(offset + 9, length);
            if (offset == 0)
            {
                firstFlags = flags;
                streamId = (bytes[offset + 5] << 24 | bytes[offset + 6] << 16 | bytes[offset + 7] << 8 | bytes[offset + 8]) & 0x7fffffff;
                var pad = 0;
                if ((flags & Padded) != 0)
                {
                    if (payload.IsEmpty) return Pass(Outcome.Unparsable);
                    pad = payload[0];
                    payload = payload[1..];
                }
                if ((flags & Priority) != 0)
                {
                    if (payload.Length < 5) return Pass(Outcome.Unparsable);
                    priority = payload[..5].ToArray();
                    payload = payload[5..];
                }
                if (pad > payload.Length) return Pass(Outcome.Unparsable);
                payload = payload[..^pad];
            }
            foreach (var b in payload) block.Add(b);
            offset += 9 + length;
        }
        var blockBytes = block.ToArray();
        var outcome = Hpack.FindAuthority(blockBytes, out var replacements);
        if (outcome != Outcome.Repaired) return Pass(outcome);

        // The block with each bad :authority value written again as a plain (not Huffman) string of the same length.
        var repaired = new List<byte>(blockBytes.Length + 64);
        var at = 0;
        foreach (var (start, end, value) in replacements)
        {
            repaired.AddRange(blockBytes.AsSpan(at, start - at).ToArray());
            Hpack.WriteInteger(repaired, 0x00, 7, value.Length);
            repaired.AddRange(value);
            at = end;
        }
        repaired.AddRange(blockBytes.AsSpan(at).ToArray());
        var fragment = (priority ?? []).Concat(repaired).ToArray();
        var firstFrame = true;
        for (var offset = 0; offset < fragment.Length || firstFrame;)
        {
            var length = Math.Min(MinMaxFrameSize, fragment.Length - offset);
            var last = offset + length >= fragment.Length;
            byte flags = firstFrame ? (byte)(firstFlags & (EndStream | Priority)) : (byte)0;
            if (last) flags |= EndHeaders;
            Span<byte> header =
            [
                (byte)(length >> 16), (byte)(length >> 8), (byte)length,
                firstFrame ? HeadersType : ContinuationType, flags,
                (byte)(streamId >> 24), (byte)(streamId >> 16), (byte)(streamId >> 8), (byte)streamId,
            ];
            target.Write(header);
            target.Write(fragment.AsSpan(offset, length));
            offset += length;
            firstFrame = false;
        }
        return Outcome.Repaired;

        Outcome Pass(Outcome result)
        {
            target.Write(bytes);
            return result;
        }
    }

    /// <summary>Just enough HPACK (RFC 7541) to find and replace :authority values.</summary>
    internal static class Hpack
    {
        public static Outcome FindAuthority(byte[] block, out List<(int Start, int End, byte[] Value)> replacements)
        {
            replacements = [];
            var found = false;
            var pos = 0;
            while (pos < block.Length)
            {
                var b = block[pos];
                if ((b & 0x80) != 0)
                {
                    // Indexed field: a dynamic entry was inserted already repaired.
                    if (!TryReadInteger(block, ref pos, 7, out _)) return Outcome.Unparsable;
                    continue;
                }
                if ((b & 0xE0) == 0x20)
                {
                    if (!TryReadInteger(block, ref pos, 5, out _)) return Outcome.Unparsable;
                    continue;
                }
                var prefix = (b & 0xC0) == 0x40 ? 6 : 4;
                if (!TryReadInteger(block, ref pos, prefix, out var nameIndex)) return Outcome.Unparsable;
                bool authority;
                if (nameIndex == 0)
                {
                    if (!TryReadString(block, ref pos, out var name, out _)) return Outcome.Unparsable;
                    authority = name is not null && name.AsSpan().SequenceEqual(":authority"u8);
                }
                else
                {
                    // Static index 1 is :authority; a dynamic entry named :authority is not looked up
                    // (clients name it by the static index).
                    authority = nameIndex == 1;
                }
                var valueStart = pos;
                if (!TryReadString(block, ref pos, out var value, out _)) return Outcome.Unparsable;
                if (!authority) continue;
                if (value is null) return Outcome.Unparsable;
                found = true;
                if (!IsValidHost(value)) replacements.Add((valueStart, pos, Sanitize(value)));
            }
            return replacements.Count > 0 ? Outcome.Repaired : found ? Outcome.Valid : Outcome.NoAuthority;
        }

        /// <summary>host, host:port, [v6]:port, with a conservative idea of a host name.</summary>
        public static bool IsValidHost(ReadOnlySpan<byte> value)
        {
            if (value.IsEmpty) return true;
            var i = 0;
            if (value[0] == '[')
            {
                var close = value.IndexOf((byte)']');
                if (close < 0) return false;
                foreach (var c in value[1..close]) if (!(char.IsAsciiHexDigit((char)c) || c is (byte)':' or (byte)'.')) return false;
                i = close + 1;
            }
            else
            {
                for (; i < value.Length && value[i] != ':'; i++)
                {
                    var c = (char)value[i];
                    if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_' or '~')) return false;
                }
            }
            if (i == value.Length) return true;
            if (value[i] != ':') return false;
            foreach (var c in value[(i + 1)..]) if (!char.IsAsciiDigit((char)c)) return false;
            return true;
        }

        /// <summary>The same number of bytes, each outside letters, digits, '.' and '-' made '-'.</summary>
        public static byte[] Sanitize(ReadOnlySpan<byte> value)
        {
            var result = value.ToArray();
            for (var i = 0; i < result.Length; i++)
            {
                if (!(char.IsAsciiLetterOrDigit((char)result[i]) || result[i] is (byte)'.' or (byte)'-')) result[i] = (byte)'-';
            }
            return result;
        }

        public static bool TryReadInteger(byte[] block, ref int pos, int prefixBits, out int value)
        {
            value = 0;
            if (pos >= block.Length) return false;
            var mask = (1 << prefixBits) - 1;
            value = block[pos++] & mask;
            if (value < mask) return true;
            var shift = 0;
            while (true)
            {
                if (pos >= block.Length || shift > 21) return false;
                var b = block[pos++];
                value += (b & 0x7f) << shift;
                shift += 7;
                if ((b & 0x80) == 0) return true;
            }
        }

        public static void WriteInteger(List<byte> output, byte firstBits, int prefixBits, int value)
        {
            var mask = (1 << prefixBits) - 1;
            if (value < mask)
            {
                output.Add((byte)(firstBits | value));
                return;
            }
            output.Add((byte)(firstBits | mask));
            value -= mask;
            while (value >= 0x80)
            {
                output.Add((byte)((value & 0x7f) | 0x80));
                value >>= 7;
            }
            output.Add((byte)value);
        }

        /// <summary>A string literal; <paramref name="value"/> is null when its Huffman code does not decode.</summary>
        public static bool TryReadString(byte[] block, ref int pos, out byte[]? value, out bool huffman)
        {
            value = null;
            huffman = pos < block.Length && (block[pos] & 0x80) != 0;
            if (!TryReadInteger(block, ref pos, 7, out var length) || length > block.Length - pos) return false;
            var raw = block.AsSpan(pos, length);
            pos += length;
            value = huffman ? Huffman.Decode(raw) : raw.ToArray();
            return true;
        }
    }

    /// <summary>
    /// HPACK's Huffman code (RFC 7541 Appendix B). It is canonical: the code of each symbol follows
    /// from the code lengths alone (symbols ordered by length, then value, get consecutive codes).
    /// </summary>
    internal static class Huffman
    {
        // Code length in bits of symbols 0..255 and EOS (256), RFC 7541 Appendix B.
        private static readonly byte[] Lengths =
        [
            13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
            6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
            13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
            15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
            20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
            22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
            26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
            20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
            30,
        ];

        private const int MaxLength = 30;
        private static readonly int[] Symbols;
        private static readonly int[] FirstCode = new int[MaxLength + 2];
        private static readonly int[] Count = new int[MaxLength + 2];
        private static readonly int[] FirstIndex = new int[MaxLength + 2];

#pragma warning disable CA1810 // the tables are computed together
        static Huffman()
#pragma warning restore CA1810
        {
            Symbols = Enumerable.Range(0, Lengths.Length).OrderBy(s => Lengths[s]).ThenBy(s => s).ToArray();
            foreach (var l in Lengths) Count[l]++;
            int code = 0, index = 0;
            for (var l = 1; l <= MaxLength; l++)
            {
                FirstCode[l] = code;
                FirstIndex[l] = index;
                code = (code + Count[l]) << 1;
                index += Count[l];
            }
        }

        /// <summary>The codes, for tests: symbol → (code, length).</summary>
        internal static (int Code, int Length) CodeOf(int symbol)
        {
            var l = Lengths[symbol];
            var rank = Array.IndexOf(Symbols, symbol) - FirstIndex[l];
            return (FirstCode[l] + rank, l);
        }

        public static byte[]? Decode(ReadOnlySpan<byte> input)
        {
            var output = new List<byte>(input.Length * 8 / 5 + 1);
            int code = 0, length = 0;
            var padding = true; // the bits since the last symbol are all ones so far
            foreach (var b in input)
            {
                for (var bit = 7; bit >= 0; bit--)
                {
                    var one = (b >> bit) & 1;
                    code = (code << 1) | one;
                    length++;
                    padding &= one == 1;
                    var rank = code - FirstCode[length];
                    if (rank >= 0 && rank < Count[length])
                    {
                        var symbol = Symbols[FirstIndex[length] + rank];
                        if (symbol == 256) return null; // EOS inside a string is an error
                        output.Add((byte)symbol);
                        code = 0;
                        length = 0;
                        padding = true;
                    }
                    else if (length >= MaxLength) return null;
                }
            }
            // At most 7 bits of padding, all ones (the start of EOS).
            return length <= 7 && padding ? output.ToArray() : null;
        }
    }
}
