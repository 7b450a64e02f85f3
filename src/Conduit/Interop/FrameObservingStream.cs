using System.Buffers.Binary;

namespace Conduit.Interop;

/// <summary>
/// A read-only stream that passes a gRPC message stream through unchanged and reports the
/// compressed flag of each length-prefixed message frame as its 5-byte header goes by. A frame's
/// flag is always reported before any byte of its message reaches the reader.
/// </summary>
internal sealed class FrameObservingStream(Stream inner, Action<bool> onFrame) : Stream
{
    private readonly byte[] _header = new byte[5];
    private int _headerFilled;
    private long _bodyLeft;

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override int Read(byte[] buffer, int offset, int count) => Observe(buffer.AsSpan(offset, inner.Read(buffer, offset, count)));

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var n = await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        return Observe(buffer.Span[..n]);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    protected override void Dispose(bool disposing)
    {
        if (disposing) inner.Dispose();
        base.Dispose(disposing);
    }

    public override ValueTask DisposeAsync() => inner.DisposeAsync();

    private int Observe(ReadOnlySpan<byte> data)
    {
        var n = data.Length;
        while (data.Length > 0)
        {
            if (_bodyLeft > 0)
            {
                var skip = (int)Math.Min(_bodyLeft, data.Length);
                _bodyLeft -= skip;
                data = data[skip..];
                continue;
            }
            var take = Math.Min(5 - _headerFilled, data.Length);
            data[..take].CopyTo(_header.AsSpan(_headerFilled));
            _headerFilled += take;
            data = data[take..];
            if (_headerFilled == 5)
            {
                onFrame(_header[0] == 1);
                _bodyLeft = BinaryPrimitives.ReadUInt32BigEndian(_header.AsSpan(1));
                _headerFilled = 0;
            }
        }
        return n;
    }
}
