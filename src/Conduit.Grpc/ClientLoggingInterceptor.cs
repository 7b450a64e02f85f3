using System.Diagnostics;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.Logging;

namespace Conduit.Grpc;

/// <summary>
/// The client's side of the per-call log: one line per call with method, status and time, at Debug
/// for OK and Information otherwise, so a command shows every call with a verbose flag and its
/// failures without one. A call's line is written when the caller learns how it ended: the
/// response (unary, client streaming), the end of the response stream (server streaming, duplex),
/// or, for a call disposed before that, at disposal (CANCELLED unless its status was already known).
/// Use it with <c>channel.Intercept(new ClientLoggingInterceptor(logger))</c>.
/// </summary>
public sealed partial class ClientLoggingInterceptor(ILogger logger) : Interceptor
{
    public override TResponse BlockingUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context, BlockingUnaryCallContinuation<TRequest, TResponse> continuation)
    {
        var log = new CallLog(this, context.Method.FullName);
        var response = log.Start(() => continuation(request, context));
        log.Ended(Status.DefaultSuccess);
        return response;
    }

    public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context, AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
    {
        var log = new CallLog(this, context.Method.FullName);
        var call = log.Start(() => continuation(request, context));
        return new AsyncUnaryCall<TResponse>(log.Response(call.ResponseAsync, call.GetStatus), call.ResponseHeadersAsync, call.GetStatus, call.GetTrailers,
            () => { call.Dispose(); log.Disposed(call.GetStatus); });
    }

    public override AsyncClientStreamingCall<TRequest, TResponse> AsyncClientStreamingCall<TRequest, TResponse>(ClientInterceptorContext<TRequest, TResponse> context, AsyncClientStreamingCallContinuation<TRequest, TResponse> continuation)
    {
        var log = new CallLog(this, context.Method.FullName);
        var call = log.Start(() => continuation(context));
        return new AsyncClientStreamingCall<TRequest, TResponse>(call.RequestStream, log.Response(call.ResponseAsync, call.GetStatus), call.ResponseHeadersAsync, call.GetStatus, call.GetTrailers,
            () => { call.Dispose(); log.Disposed(call.GetStatus); });
    }

    public override AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context, AsyncServerStreamingCallContinuation<TRequest, TResponse> continuation)
    {
        var log = new CallLog(this, context.Method.FullName);
        var call = log.Start(() => continuation(request, context));
        return new AsyncServerStreamingCall<TResponse>(new LoggingReader<TResponse>(call.ResponseStream, log, call.GetStatus), call.ResponseHeadersAsync, call.GetStatus, call.GetTrailers,
            () => { call.Dispose(); log.Disposed(call.GetStatus); });
    }

    public override AsyncDuplexStreamingCall<TRequest, TResponse> AsyncDuplexStreamingCall<TRequest, TResponse>(ClientInterceptorContext<TRequest, TResponse> context, AsyncDuplexStreamingCallContinuation<TRequest, TResponse> continuation)
    {
        var log = new CallLog(this, context.Method.FullName);
        var call = log.Start(() => continuation(context));
        return new AsyncDuplexStreamingCall<TRequest, TResponse>(call.RequestStream, new LoggingReader<TResponse>(call.ResponseStream, log, call.GetStatus), call.ResponseHeadersAsync, call.GetStatus, call.GetTrailers,
            () => { call.Dispose(); log.Disposed(call.GetStatus); });
    }

    /// <summary>The level a call that ended with <paramref name="code"/> is logged at.</summary>
    public static LogLevel LevelOf(StatusCode code) => code == StatusCode.OK ? LogLevel.Debug : LogLevel.Information;

    private void Write(string method, Status status, long start)
    {
        var level = LevelOf(status.StatusCode);
        if (!logger.IsEnabled(level)) return;
        var elapsed = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        if (status.StatusCode == StatusCode.OK) LogOk(logger, level, method, elapsed);
        else LogFailed(logger, level, method, status.StatusCode, elapsed, status.Detail);
    }

    [LoggerMessage(EventId = 1, Message = "{Method} OK {ElapsedMs:0.###}ms")]
    private static partial void LogOk(ILogger logger, LogLevel level, string method, double elapsedMs);

    [LoggerMessage(EventId = 2, Message = "{Method} {Code} {ElapsedMs:0.###}ms {Detail}")]
    private static partial void LogFailed(ILogger logger, LogLevel level, string method, StatusCode code, double elapsedMs, string detail);

    /// <summary>One call: writes its line once, whichever of its endings the caller sees first.</summary>
    private sealed class CallLog(ClientLoggingInterceptor owner, string method)
    {
        private readonly long _start = Stopwatch.GetTimestamp();
        private int _written;

        public void Ended(Status status)
        {
            if (Interlocked.Exchange(ref _written, 1) == 0) owner.Write(method, status, _start);
        }

        /// <summary>Starts the call through <paramref name="start"/>; a call that fails to start is logged and rethrown.</summary>
        public T Start<T>(Func<T> start)
        {
            try
            {
                return start();
            }
            catch (Exception ex)
            {
                Failed(ex);
                throw;
            }
        }

        public void Failed(Exception exception) => Ended(exception switch
        {
            RpcException rpc => rpc.Status,
            OperationCanceledException => new Status(StatusCode.Cancelled, exception.Message),
            _ => new Status(StatusCode.Unknown, exception.GetType().Name + ": " + exception.Message),
        });

        /// <summary>A disposed call whose end nobody observed: its status if it has one, else CANCELLED.</summary>
        public void Disposed(Func<Status> getStatus)
        {
            if (Volatile.Read(ref _written) != 0) return;
            Status status;
            try
            {
                status = getStatus();
            }
            catch (InvalidOperationException)
            {
                status = new Status(StatusCode.Cancelled, "Call disposed before it ended.");
            }
            Ended(status);
        }

        /// <summary>The status of a call whose response the caller received whole: OK unless the call says otherwise.</summary>
        public static Status StatusOrOk(Func<Status> getStatus)
        {
            try
            {
                return getStatus();
            }
            catch (InvalidOperationException)
            {
                return Status.DefaultSuccess;
            }
        }

        public async Task<T> Response<T>(Task<T> response, Func<Status> getStatus)
        {
            try
            {
                var result = await response.ConfigureAwait(false);
                Ended(StatusOrOk(getStatus));
                return result;
            }
            catch (Exception ex)
            {
                Failed(ex);
                throw;
            }
        }
    }

    private sealed class LoggingReader<T>(IAsyncStreamReader<T> inner, CallLog log, Func<Status> getStatus) : IAsyncStreamReader<T>
    {
        public T Current => inner.Current;

        public async Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            try
            {
                var more = await inner.MoveNext(cancellationToken).ConfigureAwait(false);
                if (!more) log.Ended(CallLog.StatusOrOk(getStatus));
                return more;
            }
            catch (Exception ex)
            {
                log.Failed(ex);
                throw;
            }
        }
    }
}
