using System.Diagnostics;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.Logging;

namespace Conduit.Grpc;

/// <summary>
/// The per-call log line of the talk: method, status, time, peer. What is logged at which level:
/// calls that end OK at Debug; calls the client can act on (INVALID_ARGUMENT, NOT_FOUND,
/// DEADLINE_EXCEEDED, ...) at Information; calls that failed on the server's side (UNKNOWN,
/// INTERNAL, UNAVAILABLE, DATA_LOSS) at Warning. So a default server (Information) logs every
/// failure and no success, and `--log-level Debug` logs every call. A call whose line is not
/// enabled costs a timestamp, one status check and two counter increments, no allocation.
/// </summary>
public sealed partial class LoggingInterceptor(ILogger<LoggingInterceptor> logger, CallCounters counters) : Interceptor
{
    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        var start = Stopwatch.GetTimestamp();
        Task<TResponse> task;
        try
        {
            task = continuation(request, context);
        }
        catch (Exception ex)
        {
            Completed(context, start, ex);
            throw;
        }
        if (!task.IsCompletedSuccessfully) return Awaited(task, context, start);
        Completed(context, start, null);
        return task;
    }

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        var start = Stopwatch.GetTimestamp();
        Task<TResponse> task;
        try
        {
            task = continuation(requestStream, context);
        }
        catch (Exception ex)
        {
            Completed(context, start, ex);
            throw;
        }
        return Awaited(task, context, start);
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        var start = Stopwatch.GetTimestamp();
        return Awaited(() => continuation(request, responseStream, context), context, start);
    }

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        var start = Stopwatch.GetTimestamp();
        return Awaited(() => continuation(requestStream, responseStream, context), context, start);
    }

    private async Task<T> Awaited<T>(Task<T> task, ServerCallContext context, long start)
    {
        try
        {
            var result = await task.ConfigureAwait(false);
            Completed(context, start, null);
            return result;
        }
        catch (Exception ex)
        {
            Completed(context, start, ex);
            throw;
        }
    }

    private async Task Awaited(Func<Task> handler, ServerCallContext context, long start)
    {
        try
        {
            await handler().ConfigureAwait(false);
            Completed(context, start, null);
        }
        catch (Exception ex)
        {
            Completed(context, start, ex);
            throw;
        }
    }

    private void Completed(ServerCallContext context, long start, Exception? exception)
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
        var level = LevelOf(status.StatusCode);
        if (!logger.IsEnabled(level)) return;
        var elapsed = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        if (status.StatusCode == StatusCode.OK) LogOk(logger, level, context.Method, elapsed, context.Peer);
        else LogFailed(logger, level, context.Method, status.StatusCode, elapsed, context.Peer, status.Detail);
    }

    /// <summary>The level a call that ended with <paramref name="code"/> is logged at.</summary>
    public static LogLevel LevelOf(StatusCode code) => code switch
    {
        StatusCode.OK => LogLevel.Debug,
        StatusCode.Unknown or StatusCode.Internal or StatusCode.Unavailable or StatusCode.DataLoss => LogLevel.Warning,
        _ => LogLevel.Information,
    };

    [LoggerMessage(EventId = 1, Message = "{Method} OK {ElapsedMs:0.###}ms peer={Peer}")]
    private static partial void LogOk(ILogger logger, LogLevel level, string method, double elapsedMs, string peer);

    [LoggerMessage(EventId = 2, Message = "{Method} {Code} {ElapsedMs:0.###}ms peer={Peer} {Detail}")]
    private static partial void LogFailed(ILogger logger, LogLevel level, string method, StatusCode code, double elapsedMs, string peer, string detail);
}
