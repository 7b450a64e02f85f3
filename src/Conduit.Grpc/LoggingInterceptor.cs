using System.Diagnostics;
using System.Text;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.Logging;

namespace Conduit.Grpc;

/// <summary>
/// The per-call log line of the talk: method, status, time, peer, principal, bytes. What is logged
/// at which level: calls that end OK at Debug; calls the client can act on (INVALID_ARGUMENT,
/// NOT_FOUND, DEADLINE_EXCEEDED, ...) at Information; calls that failed on the server's side
/// (UNKNOWN, INTERNAL, UNAVAILABLE, DATA_LOSS) at Warning. So a default server (Information) logs
/// every failure and no success, and `--log-level Debug` logs every call. A call whose line is not
/// enabled costs a timestamp, one status check and two counter increments, no allocation.
/// <para>
/// The fields are structured (Method, Code, ElapsedMs, Peer, Principal, RequestBytes,
/// ResponseBytes, Detail), so a JSON console writes each as its own property. Bytes are the
/// protobuf sizes of the messages (without gRPC's 5-byte frame prefixes). A single request or
/// response is measured when the line is written; a stream is counted only when the logger was
/// enabled at Debug as the call started (counting wraps the stream, which is an allocation a
/// default server does not make), and is -1 otherwise. At Trace a line at the start of each call
/// shows its request headers, authorization values hidden.
/// </para>
/// </summary>
public sealed partial class LoggingInterceptor(ILogger<LoggingInterceptor> logger, CallCounters counters) : Interceptor
{
    /// <summary>A stream whose bytes were not counted.</summary>
    private static readonly object NotCounted = new();

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        var start = Stopwatch.GetTimestamp();
        if (logger.IsEnabled(LogLevel.Trace)) Started(context);
        Task<TResponse> task;
        try
        {
            task = continuation(request, context);
        }
        catch (Exception ex)
        {
            Completed(context, start, ex, request, null);
            throw;
        }
        if (!task.IsCompletedSuccessfully) return Awaited(task, context, start, request, null);
        Completed(context, start, null, request, task.Result);
        return task;
    }

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        var start = Stopwatch.GetTimestamp();
        var reader = Counting(requestStream, context);
        Task<TResponse> task;
        try
        {
            task = continuation(reader ?? requestStream, context);
        }
        catch (Exception ex)
        {
            Completed(context, start, ex, reader ?? NotCounted, null);
            throw;
        }
        return Awaited(task, context, start, reader ?? NotCounted, null);
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        var start = Stopwatch.GetTimestamp();
        var writer = Counting(responseStream, context);
        return Awaited(() => continuation(request, writer ?? responseStream, context), context, start, request, writer ?? NotCounted);
    }

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        var start = Stopwatch.GetTimestamp();
        var reader = Counting(requestStream, context);
        var writer = reader is null ? null : new CountingWriter<TResponse>(responseStream);
        return Awaited(() => continuation(reader ?? requestStream, writer ?? responseStream, context), context, start, reader ?? NotCounted, writer ?? NotCounted);
    }

    /// <summary>A counting reader when every call is logged (Debug); null otherwise. Also writes the Trace start line.</summary>
    private CountingReader<T>? Counting<T>(IAsyncStreamReader<T> stream, ServerCallContext context)
    {
        if (!logger.IsEnabled(LogLevel.Debug)) return null;
        if (logger.IsEnabled(LogLevel.Trace)) Started(context);
        return new CountingReader<T>(stream);
    }

    private CountingWriter<T>? Counting<T>(IServerStreamWriter<T> stream, ServerCallContext context)
    {
        if (!logger.IsEnabled(LogLevel.Debug)) return null;
        if (logger.IsEnabled(LogLevel.Trace)) Started(context);
        return new CountingWriter<T>(stream);
    }

    private async Task<T> Awaited<T>(Task<T> task, ServerCallContext context, long start, object? request, object? response)
    {
        try
        {
            var result = await task.ConfigureAwait(false);
            Completed(context, start, null, request, response ?? result);
            return result;
        }
        catch (Exception ex)
        {
            Completed(context, start, ex, request, response);
            throw;
        }
    }

    private async Task Awaited(Func<Task> handler, ServerCallContext context, long start, object? request, object? response)
    {
        try
        {
            await handler().ConfigureAwait(false);
            Completed(context, start, null, request, response);
        }
        catch (Exception ex)
        {
            Completed(context, start, ex, request, response);
            throw;
        }
    }

    private void Completed(ServerCallContext context, long start, Exception? exception, object? request, object? response)
    {
        var status = exception switch
        {
            null => context.Status,
            RpcException rpc => rpc.Status,
            // The call was over for the client (it cancelled, reset the stream, went away, or the
            // deadline passed) before the handler failed: the handler's exception (an
            // OperationCanceledException, or the IOException of a read from a reset stream) is a
            // consequence, not a server fault.
            _ when context.CancellationToken.IsCancellationRequested =>
                new Status(context.Deadline <= DateTime.UtcNow ? StatusCode.DeadlineExceeded : StatusCode.Cancelled, exception.Message),
            _ => new Status(StatusCode.Unknown, exception.GetType().Name + ": " + exception.Message),
        };
        counters.Record(status.StatusCode);
        GrpcMetrics.Record(context.Method, status.StatusCode, start);
        var level = LevelOf(status.StatusCode);
        if (!logger.IsEnabled(level)) return;
        var elapsed = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        var principal = Principal(context);
        if (status.StatusCode == StatusCode.OK) LogOk(logger, level, context.Method, elapsed, context.Peer, principal, Bytes(request), Bytes(response));
        else LogFailed(logger, level, context.Method, status.StatusCode, elapsed, context.Peer, principal, Bytes(request), Bytes(response), status.Detail);
    }

    /// <summary>The level a call that ended with <paramref name="code"/> is logged at.</summary>
    public static LogLevel LevelOf(StatusCode code) => code switch
    {
        StatusCode.OK => LogLevel.Debug,
        StatusCode.Unknown or StatusCode.Internal or StatusCode.Unavailable or StatusCode.DataLoss => LogLevel.Warning,
        _ => LogLevel.Information,
    };

    /// <summary>The authenticated caller's name (ASP.NET Core's HttpContext.User), or "-".</summary>
    private static string Principal(ServerCallContext context)
    {
        try
        {
            return context.GetHttpContext().User.Identity?.Name is { Length: > 0 } name ? name : "-";
        }
        catch (InvalidOperationException)
        {
            return "-"; // a context that is not grpc-dotnet's (unit tests)
        }
    }

    private static long Bytes(object? message) => message switch
    {
        null => 0,
        IMessage m => m.CalculateSize(),
        ICounted c => c.Bytes,
        _ => -1,
    };

    private void Started(ServerCallContext context)
    {
        var headers = new StringBuilder();
        foreach (var entry in context.RequestHeaders)
        {
            if (headers.Length > 0) headers.Append(", ");
            headers.Append(entry.Key).Append('=');
            if (entry.Key is "authorization" or "proxy-authorization") headers.Append("<hidden>");
            else if (entry.IsBinary) headers.Append('<').Append(entry.ValueBytes.Length).Append(" bytes>");
            else headers.Append(entry.Value);
        }
        LogStarted(logger, context.Method, context.Peer, headers.ToString());
    }

    [LoggerMessage(EventId = 1, Message = "{Method} OK {ElapsedMs:0.###}ms peer={Peer} principal={Principal} bytes={RequestBytes}/{ResponseBytes}")]
    private static partial void LogOk(ILogger logger, LogLevel level, string method, double elapsedMs, string peer, string principal, long requestBytes, long responseBytes);

    [LoggerMessage(EventId = 2, Message = "{Method} {Code} {ElapsedMs:0.###}ms peer={Peer} principal={Principal} bytes={RequestBytes}/{ResponseBytes} {Detail}")]
    private static partial void LogFailed(ILogger logger, LogLevel level, string method, StatusCode code, double elapsedMs, string peer, string principal, long requestBytes, long responseBytes, string detail);

    [LoggerMessage(EventId = 3, Level = LogLevel.Trace, Message = "{Method} started peer={Peer} headers: {Headers}")]
    private static partial void LogStarted(ILogger logger, string method, string peer, string headers);

    private interface ICounted
    {
        long Bytes { get; }
    }

    private sealed class CountingReader<T>(IAsyncStreamReader<T> inner) : IAsyncStreamReader<T>, ICounted
    {
        private long _bytes;

        public long Bytes => Interlocked.Read(ref _bytes);

        public T Current => inner.Current;

        public async Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            if (!await inner.MoveNext(cancellationToken).ConfigureAwait(false)) return false;
            if (inner.Current is IMessage m) Interlocked.Add(ref _bytes, m.CalculateSize());
            return true;
        }
    }

    private sealed class CountingWriter<T>(IServerStreamWriter<T> inner) : IServerStreamWriter<T>, ICounted
    {
        private long _bytes;

        public long Bytes => Interlocked.Read(ref _bytes);

        public WriteOptions? WriteOptions
        {
            get => inner.WriteOptions;
            set => inner.WriteOptions = value;
        }

        public Task WriteAsync(T message) => WriteAsync(message, CancellationToken.None);

        public Task WriteAsync(T message, CancellationToken cancellationToken)
        {
            if (message is IMessage m) Interlocked.Add(ref _bytes, m.CalculateSize());
            return cancellationToken.CanBeCanceled ? inner.WriteAsync(message, cancellationToken) : inner.WriteAsync(message);
        }
    }
}
