using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Conduit.Rpc.Wire;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;

namespace Conduit.Rpc.Server;

/// <summary>One gRPC call on a Kestrel request: protocol checks, headers, deadline, status.</summary>
internal sealed partial class HttpServerCall<TRequest, TResponse> : ServerCallContext, IAsyncStreamReader<TRequest>, IServerStreamWriter<TResponse>
{
    private readonly HttpContext _http;
    private readonly Method<TRequest, TResponse> _method;
    private readonly ServerRuntime _runtime;
    private CancellationTokenSource? _callCts;
    private CancellationToken _callToken;
    // RequestAborted, captured once: a deadline timer or an inner call can ask DeadlineExceeded
    // from another thread while the call completes, when the HttpContext is disposed or reused.
    private CancellationToken _requestAborted;
    private bool _deadlineExceededAtEnd; // written before _completed
    private volatile bool _cancelledByRuntime;
    private DateTime _deadline = DateTime.MaxValue;
    private Metadata? _requestHeaders;
    private Metadata? _responseTrailers;
    private ICompressionProvider? _requestDecompressor;
    private ICompressionProvider? _responseCompressor;
    private string? _responseCompression;
    private bool _responseStarted;
    private volatile bool _completed;
    private TRequest? _current;
    private bool _lastCompressed;
    private int _reading;
    private bool _writing;
    private TaskCompletionSource? _readIdle;

    public HttpServerCall(HttpContext http, Method<TRequest, TResponse> method, ServerRuntime runtime)
    {
        _http = http;
        _method = method;
        _runtime = runtime;
        _requestAborted = http.RequestAborted;
    }

    public override string Method => _method.FullName;

    public override string Host => _http.Request.Host.Value ?? string.Empty;

    public override string Peer => FormatPeer(_http.Connection.RemoteIpAddress, _http.Connection.RemotePort);

    public override DateTime Deadline => _deadline;

    public override Metadata RequestHeaders => _requestHeaders ??= MetadataHeaders.FromHeaders(_http.Request.Headers);

    // Captured once: it stays readable after the call completes and its source is disposed.
    public override CancellationToken CancellationToken => _callToken;

    internal override bool IsCompleted => _completed;

    internal override bool DeadlineReached => DeadlineExceeded;

    public override Metadata ResponseTrailers => _responseTrailers ??= new Metadata();

    public override Status Status { get; set; } = Status.DefaultSuccess;

    public override string? ResponseCompression
    {
        get => _responseCompression ?? _runtime.Options.ResponseCompression;
        set
        {
            if (_responseStarted) throw new InvalidOperationException("Response compression must be chosen before the response starts.");
            if (value is not null && !_runtime.Options.CompressionProviders.TryGet(value, out _))
            {
                throw new ArgumentException($"Unknown compression '{value}'.", nameof(value));
            }
            _responseCompression = value;
        }
    }

    public override bool LastRequestCompressed => _lastCompressed;



    public override HttpContext GetHttpContext() => _http;

    public override async Task WriteResponseHeadersAsync(Metadata responseHeaders)
    {
        if (_responseStarted) throw new InvalidOperationException("Response headers can only be sent once, before any response message.");
        MetadataHeaders.ToHeaders(responseHeaders, _http.Response.Headers);
        StartResponse();
        await _http.Response.BodyWriter.FlushAsync(CancellationToken).ConfigureAwait(false);
    }

    /// <summary>Validates the request; on failure returns false and the status to answer with.</summary>
    public bool TryStart(out Status failure)
    {
        failure = default;
        var request = _http.Request;
        var response = _http.Response;
        if (!HttpProtocol.IsHttp2(request.Protocol) && !HttpProtocol.IsHttp3(request.Protocol))
        {
            response.StatusCode = StatusCodes.Status426UpgradeRequired;
            response.Headers.Connection = "Upgrade";
            response.Headers.Upgrade = "h2c";
            failure = new Status(StatusCode.Internal, $"Request protocol '{request.Protocol}' is not supported: gRPC needs HTTP/2.");
            return false;
        }
        if (!GrpcProtocol.IsGrpcContentType(request.ContentType))
        {
            response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
            failure = new Status(StatusCode.Internal, $"Content-Type '{request.ContentType}' is not supported.");
            return false;
        }
        response.ContentType = GrpcProtocol.ContentType;
        // Message sizes are limited per message (MaxReceiveMessageSize); Kestrel's limit on the
        // whole request body (30 MB by default) would end any long-lived request stream.
        if (_http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodyLimit) bodyLimit.MaxRequestBodySize = null;
        response.Headers[GrpcProtocol.AcceptEncodingHeader] = _runtime.Options.CompressionProviders.AcceptEncoding;

        var encoding = request.Headers[GrpcProtocol.EncodingHeader].ToString();
        if (encoding.Length > 0 && !encoding.Equals(GrpcProtocol.IdentityEncoding, StringComparison.OrdinalIgnoreCase))
        {
            if (!_runtime.Options.CompressionProviders.TryGet(encoding, out _requestDecompressor))
            {
                failure = new Status(StatusCode.Unimplemented,
                    $"Unsupported grpc-encoding value '{encoding}'. Supported encodings: {_runtime.Options.CompressionProviders.AcceptEncoding}");
                return false;
            }
        }

        var timeoutHeader = request.Headers[GrpcProtocol.TimeoutHeader];
        TimeSpan? timeout = null;
        if (timeoutHeader.Count > 0)
        {
            if (!GrpcTimeout.TryParse(timeoutHeader.ToString(), out var parsed))
            {
                failure = new Status(StatusCode.Internal, $"Malformed grpc-timeout '{timeoutHeader}'.");
                return false;
            }
            timeout = parsed;
            // Saturating: the spec allows up to 99999999H, past DateTime's range.
            var now = DateTime.UtcNow;
            _deadline = parsed < DateTime.MaxValue - now ? now + parsed : DateTime.MaxValue;
        }

        // A linked source only where something besides the client can end the call: a deadline,
        // or a server shutdown ending a stream that would otherwise stay open.
        if (timeout is not null || _method.Type != MethodType.Unary)
        {
            _callCts = CancellationTokenSource.CreateLinkedTokenSource(_requestAborted, _runtime.Stopping);
            // Timers take at most ~49.7 days; a deadline further away never fires in practice.
            if (timeout is { } t && t < TimeSpan.FromMilliseconds(uint.MaxValue - 1)) _callCts.CancelAfter(t > TimeSpan.Zero ? t : TimeSpan.FromTicks(1));
        }
        _callToken = _callCts?.Token ?? _requestAborted;
        return true;
    }

    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<TRequest> ReadSingleRequestAsync()
    {
        if (!await MoveNext().ConfigureAwait(false))
        {
            throw new RpcException(StatusCode.Internal, "Request did not contain a message.");
        }
        var request = _current!;
        if (await MoveNext().ConfigureAwait(false))
        {
            throw new RpcException(StatusCode.Internal, "Additional data after the request message received.");
        }
        return request;
    }

    /// <summary>Whether the call's deadline passed (rather than the client or a shutdown ending it).</summary>
    public bool DeadlineExceeded => _completed ? _deadlineExceededAtEnd : DeadlineExceededNow();

    // The call's source is also cancelled by the runtime itself (a request read a handler
    // abandoned), which is not the deadline.
    private bool DeadlineExceededNow() =>
        _deadline != DateTime.MaxValue && _callCts!.IsCancellationRequested && !_cancelledByRuntime
        && !_requestAborted.IsCancellationRequested && !_runtime.Stopping.IsCancellationRequested;

    /// <summary>
    /// Called once the handler is over: a request read it left running (a background reader it
    /// did not wait for) is cancelled and awaited, because Kestrel reads the rest of the request
    /// body itself when the call ends, and two readers of one body break both.
    /// </summary>
    public async ValueTask StopAbandonedReadAsync()
    {
        var idle = WhenReadIdleAsync();
        if (idle.IsCompleted) return;
        if (_callCts is { IsCancellationRequested: false } cts)
        {
            _cancelledByRuntime = true;
            cts.Cancel();
        }
        try
        {
            await idle.WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            Log.AbandonedRead(_runtime.Logger, _method.FullName);
        }
    }

    public Status StatusFromException(Exception ex)
    {
        if (_requestAborted.IsCancellationRequested) return new Status(StatusCode.Cancelled, "Call canceled by the client.");
        if (DeadlineExceeded) return new Status(StatusCode.DeadlineExceeded, "Deadline Exceeded");
        if (_runtime.Stopping.IsCancellationRequested && ex is OperationCanceledException)
        {
            return new Status(StatusCode.Unavailable, "The server is shutting down.");
        }
        switch (ex)
        {
            case RpcException rpc:
                foreach (var entry in rpc.Trailers) ResponseTrailers.Add(entry);
                return rpc.Status;
            default:
                Log.HandlerFailed(_runtime.Logger, ex, _method.FullName);
                return new Status(StatusCode.Unknown, _runtime.Options.EnableDetailedErrors
                    ? $"Exception was thrown by handler. {ex.GetType().Name}: {ex.Message}"
                    : "Exception was thrown by handler.");
        }
    }

    /// <summary>Ends the call: the status as trailers, or as headers (trailers-only) when nothing was sent.</summary>
    public void Complete(Status status, long startTimestamp)
    {
        _deadlineExceededAtEnd = DeadlineExceededNow();
        _completed = true;
        try
        {
            if (!_responseStarted)
            {
                if (_responseTrailers is not null) MetadataHeaders.ToHeaders(_responseTrailers, _http.Response.Headers);
                WriteStatusHeaders(status);
            }
            else
            {
                var trailers = _http.Features.Get<IHttpResponseTrailersFeature>()?.Trailers;
                if (trailers is not null)
                {
                    if (_responseTrailers is not null) MetadataHeaders.ToHeaders(_responseTrailers, trailers);
                    WriteStatus(status, trailers);
                }
            }
        }
        catch (InvalidOperationException) when (_requestAborted.IsCancellationRequested)
        {
            // The client is gone; there is nobody to tell.
        }
        finally
        {
            _callCts?.Dispose();
        }
        _runtime.Metrics.OnCallCompleted(status.Code);
        if (_runtime.Logger.IsEnabled(LogLevel.Information))
        {
            Log.CallCompleted(_runtime.Logger, _method.FullName, status.Code, Stopwatch.GetElapsedTime(startTimestamp).TotalMilliseconds, Peer);
        }
    }

    private void WriteStatusHeaders(Status status)
    {
        _http.Response.ContentType = GrpcProtocol.ContentType;
        WriteStatus(status, _http.Response.Headers);
    }

    private static void WriteStatus(Status status, IHeaderDictionary headers)
    {
        headers[GrpcProtocol.StatusTrailer] = ((int)status.Code).ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (!string.IsNullOrEmpty(status.Detail))
        {
            headers[GrpcProtocol.MessageTrailer] = HeaderEncoding.PercentEncode(status.Detail);
        }
        if (status.RichStatus is { } rich)
        {
            headers[GrpcProtocol.StatusDetailsTrailer] = HeaderEncoding.ToBase64Unpadded(Google.Protobuf.MessageExtensions.ToByteArray(rich));
        }
    }

    private void StartResponse()
    {
        if (_responseStarted) return;
        _responseStarted = true;
        var name = ResponseCompression;
        if (name is not null
            && CompressionProviders.Accepts(_http.Request.Headers[GrpcProtocol.AcceptEncodingHeader].ToString(), name)
            && _runtime.Options.CompressionProviders.TryGet(name, out var provider))
        {
            _responseCompressor = provider;
            _http.Response.Headers[GrpcProtocol.EncodingHeader] = provider!.EncodingName;
        }
    }

    private static string FormatPeer(IPAddress? address, int port) => address switch
    {
        null => "unknown",
        { AddressFamily: AddressFamily.InterNetworkV6 } when address.IsIPv4MappedToIPv6 => $"ipv4:{address.MapToIPv4()}:{port}",
        { AddressFamily: AddressFamily.InterNetworkV6 } => $"ipv6:[{address}]:{port}",
        _ => $"ipv4:{address}:{port}",
    };

    // The request stream and the response stream are this object too: one allocation per call.

    TRequest IAsyncStreamReader<TRequest>.Current => _current ?? throw new InvalidOperationException("No current message: call MoveNext first.");

    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<bool> MoveNext(CancellationToken cancellationToken = default)
    {
        if (_completed) throw new InvalidOperationException("The call is complete; its request stream can no longer be read.");
        if (Interlocked.Exchange(ref _reading, 1) != 0) throw new InvalidOperationException("A read is already pending; await it before the next one.");
        CancellationTokenSource? linked = null;
        // The call's own token always applies (deadline, client cancel, shutdown); a
        // caller's token is added to it, not put in its place.
        var token = CancellationToken;
        try
        {
            if (cancellationToken.CanBeCanceled && cancellationToken != token)
            {
                linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, token);
                token = linked.Token;
            }
            var result = await MessageFraming.ReadMessageAsync(_http.Request.BodyReader, _method.RequestMarshaller,
                _requestDecompressor, _runtime.Options.MaxReceiveMessageSize, "request", token).ConfigureAwait(false);
            if (!result.HasMessage)
            {
                _current = default;
                return false;
            }
            _current = result.Message;
            _lastCompressed = result.WasCompressed;
            return true;
        }
        catch (Exception ex) when (ex is IOException || (ex is OperationCanceledException && !token.IsCancellationRequested))
        {
            // Kestrel ends a request body it can no longer deliver (the client reset the stream,
            // its connection failed) with an IOException or a ConnectionAbortedException, and may
            // do so before RequestAborted fires: the client is gone, a cancelled call, not a
            // handler failure to log with its stack trace.
            // Kestrel's own message stays out of grpc-message; the exception is the inner one.
            throw new RpcException(new Status(StatusCode.Cancelled, "The request stream was aborted."), innerException: ex);
        }
        finally
        {
            linked?.Dispose();
            Volatile.Write(ref _reading, 0);
            Interlocked.Exchange(ref _readIdle, null)?.TrySetResult();
        }
    }

    /// <summary>Completes when no request read is pending.</summary>
    private Task WhenReadIdleAsync()
    {
        if (Volatile.Read(ref _reading) == 0) return Task.CompletedTask;
        var idle = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Interlocked.CompareExchange(ref _readIdle, idle, null);
        var waiter = Volatile.Read(ref _readIdle) ?? idle;
        // The read may have ended between the first check and publishing the waiter: either it
        // sees the waiter and completes it, or this sees it ended.
        if (Volatile.Read(ref _reading) == 0) Interlocked.Exchange(ref _readIdle, null)?.TrySetResult();
        return waiter.Task;
    }

    public IAsyncEnumerator<TRequest> GetAsyncEnumerator(CancellationToken cancellationToken = default) =>
        AsyncStreamReaderEnumerator.Enumerate(this, cancellationToken);

    public WriteFlags WriteFlags { get; set; }

    public async Task WriteAsync(TResponse message, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (_completed) throw new InvalidOperationException("The call is complete; no more messages can be written.");
        if (_writing) throw new InvalidOperationException("A write is already pending; await it before the next one.");
        _writing = true;
        try
        {
            StartResponse();
            var compressor = (WriteFlags & WriteFlags.NoCompress) != 0 ? null : _responseCompressor;
            var writer = _http.Response.BodyWriter;
            MessageFraming.WriteMessage(writer, message, _method.ResponseMarshaller, compressor, _runtime.Options.MaxSendMessageSize);
            if (_method.Type is MethodType.Unary or MethodType.ClientStreaming)
            {
                // A single response: Kestrel sends headers, data and trailers together at the end.
                return;
            }
            var token = cancellationToken.CanBeCanceled ? cancellationToken : CancellationToken;
            var flush = await writer.FlushAsync(token).ConfigureAwait(false);
            if (flush.IsCanceled) throw new OperationCanceledException(token);
        }
        finally
        {
            _writing = false;
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "{Method} {StatusCode} {ElapsedMs:0.000}ms peer={Peer}")]
        public static partial void CallCompleted(ILogger logger, string method, StatusCode statusCode, double elapsedMs, string peer);

        [LoggerMessage(2, LogLevel.Error, "Handler of {Method} threw.")]
        public static partial void HandlerFailed(ILogger logger, Exception exception, string method);

        [LoggerMessage(3, LogLevel.Warning, "Handler of {Method} returned with a request read still pending, which did not stop within 5 s of being cancelled.")]
        public static partial void AbandonedRead(ILogger logger, string method);
    }
}
