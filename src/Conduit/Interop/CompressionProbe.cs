using System.Buffers.Binary;
using System.Net;

namespace Conduit.Interop;

/// <summary>
/// An HTTP handler for the interop client that watches response bodies go by and records the
/// compressed flag of every gRPC frame, so the server_compressed_* cases can check what the
/// spec asks (the server compressed exactly the messages it was asked to) without the runtime
/// exposing wire details to applications.
/// </summary>
public sealed class CompressionProbe(HttpMessageHandler inner) : DelegatingHandler(inner)
{
    private readonly List<bool> _flags = new();

    /// <summary>The compressed flags of the response frames seen since the last <see cref="Reset"/>.</summary>
    public IReadOnlyList<bool> Flags
    {
        get { lock (_flags) return _flags.ToArray(); }
    }

    public void Reset()
    {
        lock (_flags) _flags.Clear();
    }

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
        var content = response.Content;
        var stream = await content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        var probed = new StreamContent(new ProbeStream(stream, this));
        foreach (var header in content.Headers) probed.Headers.TryAddWithoutValidation(header.Key, header.Value);
        response.Content = probed;
        return response;
    }

    private void Record(bool compressed)
    {
        lock (_flags) _flags.Add(compressed);
    }

    /// <summary>Passes bytes through, parsing frame headers on the way.</summary>
    private sealed class ProbeStream(Stream inner, CompressionProbe owner) : Stream
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
                    owner.Record(_header[0] == 1);
                    _bodyLeft = BinaryPrimitives.ReadUInt32BigEndian(_header.AsSpan(1));
                    _headerFilled = 0;
                }
            }
            return n;
        }
    }
}
