using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Http.Headers;
using System.Runtime.CompilerServices;
using Conduit.Rpc.Wire;

namespace Conduit.Rpc.Client;

/// <summary>
/// One call over SocketsHttpHandler, whatever its kind: the request (one pre-serialized message,
/// or a stream the caller writes to), the response headers, the response messages read straight
/// from the HTTP/2 stream (through a PipeReader for a stream of them, into one pooled buffer for a
/// unary call's one), and the final status from the trailers. The
/// deadline and cancellation are enforced locally: when either fires the HTTP/2 stream is reset.
/// The call object is also the request's HttpContent, its response reader and its request writer
/// (as the server's HttpServerCall is its own streams): one object per call, not four.
/// </summary>
internal sealed class ClientCall<TRequest, TResponse> : HttpContent, IClientCallState, IAsyncStreamReader<TResponse>, IClientStreamWriter<TRequest>
{
    private const string UserAgent = "grpc-csharp-conduit/0.1";
    private const int ReasonNone = 0, ReasonCancelled = 1, ReasonDisposed = 2;
    internal static readonly TimeSpan MaxTimer = TimeSpan.FromMilliseconds(uint.MaxValue - 1);
    private static readonly OperationCanceledException Cancelled = new();
    private static readonly StreamPipeReaderOptions ReaderOptions = new(bufferSize: 16 * 1024, minimumReadSize: 1024);

    private readonly RpcChannel _channel;
    private readonly Method<TRequest, TResponse> _method;
    // Also the call's lock (no other code sees the source, only its token): one object fewer per call.
    private readonly CancellationTokenSource _cts = new();
    // Response headers become Metadata only when asked for, and the task only exists once asked.
    private TaskCompletionSource<Metadata>? _headersSource;
    private Task<Metadata>? _headersTask;
    private Metadata? _headerMetadata;
    private bool _headersReceived;
    private DateTime _deadline = DateTime.MaxValue;
    private int _reason;
    private CancellationTokenRegistration _userRegistration;
    private CancellationTokenRegistration _parentRegistration;
    private ICompressionProvider? _requestCompressor;
    private ICompressionProvider? _responseDecompressor;
    private HttpResponseMessage? _response;
    private PipeReader? _reader;  // the response body of a streaming response
    private Stream? _body;        // the response body of a unary call, read without a PipeReader
    private Task<HttpResponseMessage>? _send;
    private Task _started = Task.CompletedTask;
    // The request body: one pre-serialized frame (unary and server streaming), or the stream
    // SocketsHttpHandler hands us, kept open until the caller completes it (client streaming, duplex).
    private byte[]? _frame;
    private TaskCompletionSource<Stream>? _requestStream;
    private TaskCompletionSource? _requestDone;
    private TResponse? _current;
    private bool _requestCompleted;
    private int _writePending;
    // Owned by whoever takes it out of the field (a write while it runs): a pooled array is
    // returned exactly once, even when a caller overlaps writes against the contract.
    private PooledBufferWriter? _writeBuffer;
    private bool _writesDropped;
    private Status? _status;
    // Null until asked for, converted from _trailerSource (the response's trailers) if set.
    private Metadata? _trailers;
    private HttpHeaders? _trailerSource;
    private int _reading;
    private int _released;
    private volatile bool _endedByServer;
    private Server.ServerCallContext? _parent;

    public ClientCall(RpcChannel channel, Method<TRequest, TResponse> method)
    {
        _channel = channel;
        _method = method;
    }

    public IAsyncStreamReader<TResponse> ResponseStream => this;

    public IClientStreamWriter<TRequest> RequestStream => this;

    public Task<Metadata> ResponseHeadersAsync
    {
        get
        {
            lock (_cts)
            {
                if (_headersTask is not null) return _headersTask;
                if (_headersReceived)
                {
                    _headersTask = Task.FromResult(HeaderMetadata());
                }
                else if (_status is { } status)
                {
                    _headersTask = Task.FromException<Metadata>(new RpcException(status, Trailers));
                    _ = _headersTask.Exception; // observed: a caller that never awaits it is fine
                }
                else
                {
                    _headersSource = new TaskCompletionSource<Metadata>(TaskCreationOptions.RunContinuationsAsynchronously);
                    _headersTask = _headersSource.Task;
                }
                return _headersTask;
            }
        }
    }

    public Status GetStatus() => _status ?? throw new InvalidOperationException("The call is still in progress: its status is not known yet.");

    public Metadata GetTrailers() => _status is null
        ? throw new InvalidOperationException("The call is still in progress: its trailers are not known yet.")
        : Trailers;

    /// <summary>The trailers of a finished call, converted to Metadata the first time they are asked for.</summary>
    private Metadata Trailers
    {
        get
        {
            lock (_cts) return _trailers ??= _trailerSource is { } source ? ReadMetadata(source) : new Metadata();
        }
    }

    /// <summary>The response headers as Metadata (under the lock, once they were received).</summary>
    private Metadata HeaderMetadata() => _headerMetadata ??= ReadMetadata(_response!.Headers);

    /// <summary>
    /// Sends a single request message. The response is then read either by
    /// <see cref="UnaryResponseAsync"/> (a unary call: the whole call is one async method) or,
    /// with <paramref name="startResponse"/>, by a task started here (a server stream).
    /// </summary>
    public void StartUnary(TRequest request, in CallOptions options, bool startResponse)
    {
        ResolveCompression(options);
        try
        {
            // A plain array, not a pooled one: SocketsHttpHandler may still be sending (or
            // resend) the body when the call ends, so nothing may return it to a pool under it.
            _frame = MessageFraming.SerializeFrame(request, _method.RequestMarshaller, _requestCompressor, _channel.Options.MaxSendMessageSize);
        }
        catch (RpcException ex)
        {
            Finish(ex.Status, null);
            return;
        }
        Start(options);
        if (startResponse) _started = StartResponseAsync(pipe: true).AsTask();
    }

    public void StartStreaming(in CallOptions options)
    {
        ResolveCompression(options);
        _requestStream = new TaskCompletionSource<Stream>(TaskCreationOptions.RunContinuationsAsynchronously);
        _requestDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Start(options);
        _started = StartResponseAsync(pipe: true).AsTask();
    }

    private void ResolveCompression(in CallOptions options)
    {
        if (options.Compression is { } name && !name.Equals(GrpcProtocol.IdentityEncoding, StringComparison.OrdinalIgnoreCase))
        {
            if (!_channel.Options.CompressionProviders.TryGet(name, out _requestCompressor))
            {
                throw new ArgumentException($"The channel has no compression provider named '{name}'.");
            }
        }
    }

    private void Start(in CallOptions options)
    {
        var parent = options.Parent;
        _deadline = options.Deadline?.ToUniversalTime() ?? DateTime.MaxValue;
        if (parent is not null && parent.Deadline < _deadline) _deadline = parent.Deadline;

        var request = new HttpRequestMessage(HttpMethod.Post, _channel.GetUri(_method))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = this,
        };
        var headers = request.Headers;
        headers.TryAddWithoutValidation(GrpcProtocol.TeHeader, "trailers");
        headers.TryAddWithoutValidation("user-agent", UserAgent);
        headers.TryAddWithoutValidation(GrpcProtocol.AcceptEncodingHeader, _channel.Options.CompressionProviders.AcceptEncoding);
        if (_requestCompressor is not null) headers.TryAddWithoutValidation(GrpcProtocol.EncodingHeader, _requestCompressor.EncodingName);
        Headers.TryAddWithoutValidation("content-type", GrpcProtocol.ContentType);
        if (options.Headers is { } metadata)
        {
            foreach (var entry in metadata)
            {
                if (MetadataCodec.TryEncode(entry, out var value)) headers.TryAddWithoutValidation(entry.Key, value);
            }
        }

        if (_deadline != DateTime.MaxValue)
        {
            var remaining = _deadline - DateTime.UtcNow;
            if (remaining <= TimeSpan.Zero)
            {
                _cts.Cancel();
            }
            else
            {
                headers.TryAddWithoutValidation(GrpcProtocol.TimeoutHeader, GrpcTimeout.Format(remaining));
                // Timers take at most ~49.7 days; a deadline further away never fires in practice.
                if (remaining < MaxTimer) _cts.CancelAfter(remaining);
            }
        }
        if (options.CancellationToken.CanBeCanceled)
        {
            _userRegistration = options.CancellationToken.UnsafeRegister(static s => ((ClientCall<TRequest, TResponse>)s!).Cancel(ReasonCancelled), this);
        }
        if (parent is not null)
        {
            // The incoming call ending at its deadline is this call's deadline too (same instant).
            _parent = parent;
            _parentRegistration = parent.CancellationToken.UnsafeRegister(static s =>
            {
                var call = (ClientCall<TRequest, TResponse>)s!;
                call.Cancel(call._parent!.DeadlineReached ? ReasonNone : ReasonCancelled);
            }, this);
        }
        // Whatever cancels the call (deadline, caller, parent, Dispose) ends it at once: the status
        // is recorded and the HTTP/2 stream reset, even if nobody is reading the response. Cancel
        // does that itself; only the deadline's timer cancels the token behind our back, so only a
        // call with a deadline needs a callback on it.
        if (_deadline != DateTime.MaxValue)
        {
            _cts.Token.UnsafeRegister(static s =>
            {
                var call = (ClientCall<TRequest, TResponse>)s!;
                call.Finish(call.StatusFromException(Cancelled), null);
            }, this);
        }
        _send = _channel.Http.SendAsync(request, _cts.Token);
    }

    private void Cancel(int reason)
    {
        Interlocked.CompareExchange(ref _reason, reason, ReasonNone);
        try
        {
            _cts.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
        // (Once the status is recorded this returns at once: Finish calls back here to reset the stream.)
        Finish(StatusFromException(Cancelled), null);
    }

    /// <summary>
    /// Waits for the response headers, checks them, and opens the response body for reading:
    /// through a PipeReader (<paramref name="pipe"/>, a stream of messages), or as the plain stream.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask StartResponseAsync(bool pipe)
    {
        if (_send is not { } send) return; // ended before it was sent
        HttpResponseMessage response;
        try
        {
            response = await send.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            Finish(StatusFromException(ex), null);
            return;
        }
        TaskCompletionSource<Metadata>? headersSource;
        lock (_cts)
        {
            if (_status is not null)
            {
                // Disposed or failed while the headers were on their way: nobody will read this.
                response.Dispose();
                return;
            }
            _response = response;
            _headersReceived = true;
            headersSource = _headersSource;
        }
        if (headersSource is not null)
        {
            Metadata metadata;
            lock (_cts) metadata = HeaderMetadata();
            headersSource.TrySetResult(metadata);
        }

        // Header values are read unparsed (NonValidated): typed access would parse and allocate.
        var headers = response.Headers.NonValidated;
        if (headers.Contains(GrpcProtocol.StatusTrailer))
        {
            // Trailers-only: the status arrived in the headers and there is no body.
            _endedByServer = true;
            Finish(ReadStatus(headers), null, response.Headers);
            return;
        }
        if (response.StatusCode != HttpStatusCode.OK)
        {
            Finish(new Status(MapHttpStatus(response.StatusCode), $"Bad gRPC response. HTTP status code: {(int)response.StatusCode}"), null, response.Headers);
            return;
        }
        if (!GrpcProtocol.IsGrpcContentType(FirstValue(response.Content.Headers.NonValidated, "content-type")))
        {
            var contentType = response.Content.Headers.ContentType?.MediaType;
            Finish(new Status(StatusCode.Unknown, $"Bad gRPC response. Invalid content-type value: {contentType}"), null, response.Headers);
            return;
        }
        if (FirstValue(headers, GrpcProtocol.EncodingHeader) is { } encoding
            && !encoding.Equals(GrpcProtocol.IdentityEncoding, StringComparison.OrdinalIgnoreCase)
            && !_channel.Options.CompressionProviders.TryGet(encoding, out _responseDecompressor))
        {
            Finish(new Status(StatusCode.Internal, $"The server compressed the response with unsupported grpc-encoding '{encoding}'."), null, response.Headers);
            return;
        }
        try
        {
            // The runtime's own contents (SocketsHttpHandler's response among them) open their
            // stream without I/O: no Task<Stream> for those.
            var content = response.Content;
            var stream = content.GetType().Assembly == typeof(HttpContent).Assembly
                ? content.ReadAsStream(_cts.Token)
                : await content.ReadAsStreamAsync(_cts.Token).ConfigureAwait(false);
            var reader = pipe ? PipeReader.Create(stream, ReaderOptions) : null;
            lock (_cts)
            {
                if (_status is not null)
                {
                    if (reader is not null) reader.Complete();
                    else stream.Dispose();
                    return;
                }
                _reader = reader;
                _body = stream;
            }
        }
        catch (Exception ex)
        {
            Finish(StatusFromException(ex), null);
        }
    }

    /// <summary>
    /// Reads the next response message into <see cref="_current"/>; false (and no current message)
    /// at the end of an OK call; RpcException otherwise. It is the response reader's MoveNext
    /// itself, so reading a message costs one state machine, not two.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> ReadNextAsync(CancellationToken cancellationToken)
    {
        await _started.ConfigureAwait(false);
        // While a read runs, Finish (from Dispose, a deadline, the writer) leaves the response and
        // its pooled buffers alone; the read releases them on its way out.
        Interlocked.Exchange(ref _reading, 1);
        try
        {
            ThrowIfFinished();
            if (_status is not null)
            {
                _current = default; // ended OK: nothing more to read
                return false;
            }
            using var registration = cancellationToken.CanBeCanceled
                ? cancellationToken.UnsafeRegister(static s => ((ClientCall<TRequest, TResponse>)s!).Cancel(ReasonCancelled), this)
                : default;
            try
            {
                var result = await MessageFraming.ReadMessageAsync(_reader!, _method.ResponseMarshaller, _responseDecompressor,
                    _channel.Options.MaxReceiveMessageSize, "response", _cts.Token).ConfigureAwait(false);
                if (result.HasMessage)
                {
                    _current = result.Message;
                    return true;
                }
            }
            catch (Exception ex)
            {
                Finish(ex is RpcException rpc && !_cts.IsCancellationRequested ? rpc.Status : StatusFromException(ex), null);
                ThrowIfFinished();
            }
            FinishFromTrailers();
            ThrowIfFinished();
            _current = default;
            return false;
        }
        finally
        {
            Volatile.Write(ref _reading, 0);
            if (_status is not null) ReleaseResponse();
        }
    }

    /// <summary>
    /// A unary call from sending to its one response: the only state machine the call allocates
    /// (the steps it awaits are pooled ValueTask methods).
    /// </summary>
    public async Task<TResponse> UnaryResponseAsync()
    {
        await StartResponseAsync(pipe: false).ConfigureAwait(false);
        return await ReadUnaryBodyAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// Reads the one response message of a unary call straight from the response stream into a
    /// pooled buffer, then the end of the stream and the trailers. Ends and fails exactly as
    /// <see cref="ReadSingleResponseAsync"/> (two <see cref="ReadNextAsync"/>) over a PipeReader
    /// does: the same checks in the same order, without a PipeReader per call.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<TResponse> ReadUnaryBodyAsync()
    {
        Interlocked.Exchange(ref _reading, 1);
        byte[]? buffer = null;
        try
        {
            ThrowIfFinished();
            if (_status is null)
            {
                var maxSize = _channel.Options.MaxReceiveMessageSize;
                var (hasMessage, message) = (false, default(TResponse)!);
                var filled = 0;  // bytes in buffer
                var parsed = 0;  // bytes of the first frame, once it was decoded
                var second = false;
                try
                {
                    buffer = ArrayPool<byte>.Shared.Rent(1024);
                    while (true)
                    {
                        var available = new ReadOnlySequence<byte>(buffer, parsed, filled - parsed);
                        if (!hasMessage && MessageFraming.TryReadMessage(available, _method.ResponseMarshaller, _responseDecompressor, maxSize, "response", out message, out var consumed))
                        {
                            (hasMessage, parsed) = (true, consumed);
                            continue;
                        }
                        if (hasMessage && MessageFraming.TryReadMessage(available, _method.ResponseMarshaller, _responseDecompressor, maxSize, "response", out _, out _))
                        {
                            second = true;
                            break;
                        }
                        if (filled == buffer.Length) buffer = Grow(buffer, filled, parsed, maxSize);
                        var read = await _body!.ReadAsync(buffer.AsMemory(filled), _cts.Token).ConfigureAwait(false);
                        if (read == 0) break;
                        filled += read;
                    }
                    if (!second && filled > parsed)
                    {
                        throw new RpcException(StatusCode.Internal, "Incomplete response message: the stream ended inside a frame.");
                    }
                }
                catch (Exception ex)
                {
                    Finish(ex is RpcException rpc && !_cts.IsCancellationRequested ? rpc.Status : StatusFromException(ex), null);
                    ThrowIfFinished();
                }
                if (second)
                {
                    Cancel(ReasonDisposed);
                    Fail(new Status(StatusCode.Internal, "The server sent more than one response message to a call that expects one."));
                }
                if (_status is null)
                {
                    FinishFromTrailers();
                    ThrowIfFinished();
                }
                if (hasMessage) return message;
            }
            Fail(new Status(StatusCode.Internal, "The server ended the call with OK but sent no response message."));
            return default!;
        }
        finally
        {
            if (buffer is not null) ArrayPool<byte>.Shared.Return(buffer);
            Volatile.Write(ref _reading, 0);
            if (_status is not null) ReleaseResponse();
        }
    }

    /// <summary>A larger pooled buffer for <see cref="ReadUnaryBodyAsync"/>: room for the frame being read (whose length was checked) or twice the room.</summary>
    private static byte[] Grow(byte[] buffer, int filled, int parsed, int maxSize)
    {
        var needed = filled * 2L;
        if (filled - parsed >= GrpcProtocol.HeaderSize)
        {
            var length = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(buffer.AsSpan(parsed + 1));
            needed = Math.Max(needed, parsed + GrpcProtocol.HeaderSize + (long)Math.Min(length, (uint)maxSize) + GrpcProtocol.HeaderSize);
        }
        var larger = ArrayPool<byte>.Shared.Rent((int)Math.Min(needed, Array.MaxLength));
        buffer.AsSpan(0, filled).CopyTo(larger);
        ArrayPool<byte>.Shared.Return(buffer);
        return larger;
    }

    /// <summary>The one response of a client-streaming call.</summary>
    public async Task<TResponse> ReadUnaryResponseAsync() => await ReadSingleResponseAsync().ConfigureAwait(false);

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<TResponse> ReadSingleResponseAsync()
    {
        if (!await ReadNextAsync(default).ConfigureAwait(false))
        {
            Fail(new Status(StatusCode.Internal, "The server ended the call with OK but sent no response message."));
        }
        var message = _current!;
        if (await ReadNextAsync(default).ConfigureAwait(false))
        {
            Cancel(ReasonDisposed);
            Fail(new Status(StatusCode.Internal, "The server sent more than one response message to a call that expects one."));
        }
        return message;
    }

    private void ThrowIfFinished()
    {
        if (_status is { } status && status.Code != StatusCode.OK)
        {
            throw new RpcException(status, Trailers);
        }
    }

    /// <summary>Ends the call with <paramref name="status"/> (even one that ended OK on the wire) and throws it.</summary>
    private void Fail(Status status)
    {
        Finish(status, null);
        lock (_cts) _status = status;
        throw new RpcException(status, Trailers);
    }

    /// <summary>The response ended: the status is the server's, from its trailers.</summary>
    private void FinishFromTrailers()
    {
        var trailers = _response!.TrailingHeaders;
        // Only if the call is not already over on this side (cancel, deadline, Dispose): writes
        // after a client-side end throw that status rather than being dropped.
        if (_status is null) _endedByServer = true;
        Finish(trailers.NonValidated.Contains(GrpcProtocol.StatusTrailer)
            ? ReadStatus(trailers.NonValidated)
            : new Status(StatusCode.Internal, "The response ended without a grpc-status."), null, trailers);
    }

    /// <summary>
    /// Records the final status (the first one wins) and releases what the call holds. The
    /// trailers are <paramref name="trailers"/>, else read from <paramref name="trailerSource"/>
    /// when first asked for, else empty.
    /// </summary>
    private void Finish(Status status, Metadata? trailers, HttpHeaders? trailerSource = null)
    {
        TaskCompletionSource<Metadata>? headersSource;
        lock (_cts)
        {
            if (_status is not null) return;
            _status = status;
            _trailers = trailers;
            _trailerSource = trailerSource;
            headersSource = _headersReceived ? null : _headersSource;
        }
        if (headersSource is not null)
        {
            headersSource.TrySetException(new RpcException(status, Trailers));
            _ = headersSource.Task.Exception; // observed: a caller that never awaits it is fine
        }
        if (_requestStream is { } requestStream)
        {
            // A writer waiting for the request stream learns how the call ended; the body ends:
            // half-closed (END_STREAM) only if the call ended OK. A call that failed here aborts
            // the body instead, so a server never takes the messages sent so far for a
            // complete request stream (the reset below could otherwise lose the race).
            requestStream.TrySetException(new RpcException(status, Trailers));
            _ = requestStream.Task.Exception;
            if (status.Code == StatusCode.OK) _requestDone!.TrySetResult();
            else _requestDone!.TrySetCanceled();
        }
        _userRegistration.Dispose();
        _parentRegistration.Dispose();
        if (status.Code != StatusCode.OK)
        {
            // Resets the HTTP/2 stream if it is still open.
            Cancel(ReasonDisposed);
        }
        else if (_deadline != DateTime.MaxValue)
        {
            // Stop the deadline timer of a call that ended in time.
            try { _cts.CancelAfter(Timeout.Infinite); } catch (ObjectDisposedException) { }
        }
        // The response is fully read (OK) or abandoned: return its buffers and connection stream,
        // unless a read is running right now (it releases them when it returns).
        if (Volatile.Read(ref _reading) == 0) ReleaseResponse();
    }

    private void ReleaseResponse()
    {
        if (Interlocked.Exchange(ref _released, 1) != 0) return;
        PipeReader? reader;
        HttpResponseMessage? response;
        lock (_cts) (reader, response) = (_reader, _response);
        reader?.Complete();
        response?.Dispose();
        // The request is not disposed: SocketsHttpHandler may still hold it (a call that ended
        // before it was sent), and its content (a plain array, or the streaming content) holds
        // nothing that needs releasing.
    }

    /// <summary>Cancels the call if it is still running (not HttpContent.Dispose, which is the request body's).</summary>
    public void DisposeCall()
    {
        // A call that is over has nothing left to cancel (and cancelling costs: callbacks, timers).
        if (_status is not null)
        {
            if (Volatile.Read(ref _reading) == 0) ReleaseResponse();
            return;
        }
        Cancel(ReasonDisposed);
        Finish(new Status(StatusCode.Cancelled, "Call disposed."), null);
    }

    private Status StatusFromException(Exception ex)
    {
        if (_cts.IsCancellationRequested)
        {
            return Volatile.Read(ref _reason) switch
            {
                ReasonCancelled => new Status(StatusCode.Cancelled, "Call canceled by the client."),
                ReasonDisposed => new Status(StatusCode.Cancelled, "Call disposed."),
                _ => new Status(StatusCode.DeadlineExceeded, "Deadline Exceeded"),
            };
        }
        for (var e = ex; e is not null; e = e.InnerException)
        {
            switch (e)
            {
                case RpcException rpc:
                    return rpc.Status;
                case HttpProtocolException protocol:
                    return new Status(MapHttp2Error(protocol.ErrorCode), $"HTTP/2 error from the server: {protocol.Message}");
            }
        }
        return ex switch
        {
            HttpRequestException or IOException => new Status(StatusCode.Unavailable, $"Error talking to {_channel.Address}: {Flatten(ex)}"),
            OperationCanceledException => new Status(StatusCode.Cancelled, "Call canceled."),
            _ => new Status(StatusCode.Internal, $"Error in the call: {Flatten(ex)}"),
        };
    }

    private static string Flatten(Exception ex)
    {
        var parts = new List<string>();
        for (var e = ex; e is not null; e = e.InnerException) parts.Add(e.Message);
        return string.Join(" ", parts.Distinct());
    }

    /// <summary>grpc/grpc doc/http-grpc-status-mapping.md.</summary>
    internal static StatusCode MapHttpStatus(HttpStatusCode code) => (int)code switch
    {
        400 => StatusCode.Internal,
        401 => StatusCode.Unauthenticated,
        403 => StatusCode.PermissionDenied,
        404 => StatusCode.Unimplemented,
        429 or 502 or 503 or 504 => StatusCode.Unavailable,
        _ => StatusCode.Unknown,
    };

    /// <summary>RST_STREAM / GOAWAY codes as PROTOCOL-HTTP2.md maps them.</summary>
    internal static StatusCode MapHttp2Error(long code) => code switch
    {
        0x7 => StatusCode.Unavailable,        // REFUSED_STREAM
        0x8 => StatusCode.Cancelled,          // CANCEL
        0xB => StatusCode.ResourceExhausted,  // ENHANCE_YOUR_CALM
        0xC => StatusCode.PermissionDenied,   // INADEQUATE_SECURITY
        _ => StatusCode.Internal,
    };

    /// <summary>The first value of a header as received (not parsed), or null.</summary>
    private static string? FirstValue(HttpHeadersNonValidated headers, string name)
    {
        if (!headers.TryGetValues(name, out var values)) return null;
        foreach (var value in values) return value;
        return null;
    }

    private static Status ReadStatus(HttpHeadersNonValidated headers)
    {
        var code = StatusCode.Unknown;
        if (FirstValue(headers, GrpcProtocol.StatusTrailer) is { } text
            && int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var parsed))
        {
            code = (StatusCode)parsed;
        }
        var message = FirstValue(headers, GrpcProtocol.MessageTrailer) is { } encoded ? HeaderEncoding.PercentDecode(encoded) : string.Empty;
        Google.Rpc.Status? rich = null;
        if (FirstValue(headers, GrpcProtocol.StatusDetailsTrailer) is { } details)
        {
            try
            {
                rich = Google.Rpc.Status.Parser.ParseFrom(HeaderEncoding.FromBase64(details));
            }
            catch (Exception ex) when (ex is FormatException or Google.Protobuf.InvalidProtocolBufferException)
            {
                // Unreadable details do not hide the code and message.
            }
        }
        return new Status(code, message) { RichStatus = rich };
    }

    private static Metadata ReadMetadata(HttpHeaders headers)
    {
        var metadata = new Metadata();
        foreach (var (key, values) in headers.NonValidated)
        {
            foreach (var value in values)
            {
                try
                {
                    MetadataCodec.Add(metadata, key, value);
                }
                catch (Exception ex) when (ex is ArgumentException or FormatException)
                {
                    // Not valid gRPC metadata: not exposed.
                }
            }
        }
        return metadata;
    }

    TResponse IAsyncStreamReader<TResponse>.Current => _current ?? throw new InvalidOperationException("No current message: call MoveNext first.");

    ValueTask<bool> IAsyncStreamReader<TResponse>.MoveNext(CancellationToken cancellationToken) => ReadNextAsync(cancellationToken);

    IAsyncEnumerator<TResponse> IAsyncEnumerable<TResponse>.GetAsyncEnumerator(CancellationToken cancellationToken) =>
        AsyncStreamReaderEnumerator.Enumerate(this, cancellationToken);

    WriteFlags IAsyncStreamWriter<TRequest>.WriteFlags { get; set; }

    Task IAsyncStreamWriter<TRequest>.WriteAsync(TRequest message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (_requestStream is not { } requestStream) return Task.FromException(new InvalidOperationException("This call has no request stream."));
        if (_requestCompleted) return Task.FromException(new InvalidOperationException("The request stream is already complete."));
        if (Interlocked.Exchange(ref _writePending, 1) != 0) return Task.FromException(new InvalidOperationException("A write is already pending; await it before the next one."));
        return WriteMessageAsync(requestStream, message, cancellationToken);
    }

    /// <summary>One write, with the pending-write flag taken; releases it when done.</summary>
    private async Task WriteMessageAsync(TaskCompletionSource<Stream> requestStream, TRequest message, CancellationToken cancellationToken)
    {
        try
        {
            // The server ended the call: the message is dropped and the server's status is what
            // reading the response gives (grpc-go, grpc-java). A call ended here (cancel,
            // deadline, Dispose, a broken connection) throws how it ended instead.
            if (_writesDropped || _endedByServer) return;
            ThrowIfFinished();
            if (_status is not null) throw new InvalidOperationException("The call is already over.");
            PooledBufferWriter? buffer = null;
            try
            {
                using var registration = cancellationToken.CanBeCanceled
                    ? cancellationToken.UnsafeRegister(static s => ((ClientCall<TRequest, TResponse>)s!).Cancel(ReasonCancelled), this)
                    : default;
                var stream = await requestStream.Task.ConfigureAwait(false);
                // One buffer for all the call's writes (one write at a time), cleared after each.
                buffer = Interlocked.Exchange(ref _writeBuffer, null) ?? new PooledBufferWriter();
                var compressor = (((IAsyncStreamWriter<TRequest>)this).WriteFlags & WriteFlags.NoCompress) != 0 ? null : _requestCompressor;
                try
                {
                    MessageFraming.WriteMessage(buffer, message, _method.RequestMarshaller, compressor, _channel.Options.MaxSendMessageSize);
                }
                catch (RpcException ex)
                {
                    // A message too large to send fails the call, as on the unary path.
                    Finish(ex.Status, null);
                    throw;
                }
                await stream.WriteAsync(buffer.WrittenMemory, _cts.Token).ConfigureAwait(false);
                await stream.FlushAsync(_cts.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not RpcException || _status is not null)
            {
                if (_endedByServer) return;
                if (_status is null && !_cts.IsCancellationRequested)
                {
                    await _started.ConfigureAwait(false);
                    if (_status is null && _response is not null)
                    {
                        // The server answered and ended the call while we were still sending. As in
                        // grpc-java, the message is dropped and the call's status is what reading
                        // the response gives: that is where the server's real status is.
                        _writesDropped = true;
                        return;
                    }
                }
                // The call ended under the write: report how it ended.
                if (_status is null) Finish(StatusFromException(ex), null);
                if (_status is { Code: StatusCode.OK }) throw new InvalidOperationException("The call is already over.", ex);
                throw new RpcException(_status!.Value, Trailers);
            }
            finally
            {
                if (buffer is not null)
                {
                    buffer.Clear();
                    // Kept for the next write unless one large message grew it (or, against the
                    // contract, another write already put one back); back to the pool then.
                    if (!buffer.WorthKeeping || Interlocked.CompareExchange(ref _writeBuffer, buffer, null) is not null) buffer.Dispose();
                }
                // No more writes once the request stream is complete or the call is over.
                if (_requestCompleted || _status is not null) Interlocked.Exchange(ref _writeBuffer, null)?.Dispose();
            }
        }
        finally
        {
            Volatile.Write(ref _writePending, 0);
        }
    }

    Task IClientStreamWriter<TRequest>.CompleteAsync()
    {
        _requestCompleted = true;
        _requestDone?.TrySetResult();
        Interlocked.Exchange(ref _writeBuffer, null)?.Dispose();
        return Task.CompletedTask;
    }

    // The request body, as SocketsHttpHandler asks for it.

    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
        SerializeToStreamAsync(stream, context, CancellationToken.None);

    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken) =>
        _frame is { } frame ? stream.WriteAsync(frame, cancellationToken).AsTask() : SerializeStreamingAsync(stream, cancellationToken);

    /// <summary>
    /// The request stream of a streaming call: SocketsHttpHandler hands us the HTTP/2 request
    /// stream and we keep it open until the caller completes (half-closes) or the call ends.
    /// </summary>
    private async Task SerializeStreamingAsync(Stream stream, CancellationToken cancellationToken)
    {
        // SocketsHttpHandler asks again when it retries on a new HTTP/2 stream (REFUSED_STREAM, a
        // GOAWAY below our stream id). Writers already hold the first stream and what they wrote
        // went nowhere: the call fails rather than silently losing those messages.
        if (_requestStream!.Task.IsCompleted)
        {
            throw new RpcException(StatusCode.Unavailable, "The server refused the call's HTTP/2 stream; a streaming request is not replayed on a new one.");
        }
        // SocketsHttpHandler holds the request headers back until the body is flushed: flush
        // now so the server sees the call even before the first message (or with none).
        await stream.FlushAsync(cancellationToken).ConfigureAwait(false);
        _requestStream!.TrySetResult(stream);
        // SocketsHttpHandler cancelling the body is an abort, never a half-close.
        await using var registration = cancellationToken.UnsafeRegister(static s => ((TaskCompletionSource)s!).TrySetCanceled(), _requestDone).ConfigureAwait(false);
        await _requestDone!.Task.ConfigureAwait(false);
    }

    protected override bool TryComputeLength(out long length)
    {
        length = _frame?.Length ?? -1;
        return _frame is not null;
    }
}
