using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Conduit.Grpc.Cluster;

/// <summary>
/// Repeats a unary call that must go to the leader (Produce, ProduceBatch, CreateTopic, Truncate)
/// when a server answered UNAVAILABLE with ErrorInfo reason NOT_LEADER, or the conduit_leader
/// picker had no leader to send it to: such a server refused the request without appending
/// anything (and a call the picker refused was never sent), so sending it again cannot write a
/// record twice, and the
/// conduit:/// channel is already asking for the new leader (the retry waits 50 ms, doubling, for
/// that answer, at most <see cref="MaxAttempts"/> attempts in all and never past the call's
/// deadline). Any other failure, UNAVAILABLE from a broken connection included, is returned as it
/// is: the request may have been appended. Streaming calls are not repeated.
/// </summary>
public sealed class NotLeaderRetryInterceptor : Interceptor
{
    /// <summary>Attempts in all, the first one included.</summary>
    public int MaxAttempts { get; init; } = 5;

    /// <summary>The wait before the first repeat; doubled before each next one.</summary>
    public TimeSpan InitialBackoff { get; init; } = TimeSpan.FromMilliseconds(50);

    public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context, AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        if (ConduitCluster.RouteOf(context.Method.FullName) != ConduitCluster.Route.Leader || MaxAttempts <= 1)
        {
            return continuation(request, context);
        }
        var current = continuation(request, context);
        var headers = new TaskCompletionSource<Metadata>(TaskCreationOptions.RunContinuationsAsynchronously);
        async Task<TResponse> RunAsync()
        {
            var backoff = InitialBackoff;
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    var response = await current.ResponseAsync.ConfigureAwait(false);
                    headers.TrySetResult(await current.ResponseHeadersAsync.ConfigureAwait(false));
                    return response;
                }
                catch (RpcException ex) when (attempt < MaxAttempts && (IsNotLeader(ex) || IsNoLeader(ex)) && Fits(context.Options.Deadline, backoff))
                {
                    try
                    {
                        await Task.Delay(backoff, context.Options.CancellationToken).ConfigureAwait(false);
                        backoff *= 2;
                        current.Dispose();
                        current = continuation(request, context);
                    }
                    catch (Exception stopped)
                    {
                        // Cancelled while waiting, or the next attempt could not start: the headers
                        // task must end too, or ResponseHeadersAsync would wait forever.
                        headers.TrySetException(stopped);
                        throw;
                    }
                }
                catch (Exception ex)
                {
                    headers.TrySetException(ex);
                    throw;
                }
            }
        }
        return new AsyncUnaryCall<TResponse>(RunAsync(), headers.Task, () => current.GetStatus(), () => current.GetTrailers(), () => current.Dispose());
    }

    private static bool Fits(DateTime? deadline, TimeSpan wait) => deadline is not { } d || d == DateTime.MaxValue || d.ToUniversalTime() - DateTime.UtcNow > wait;

    /// <summary>The conduit_leader picker's refusal: no leader was ready, the call never left the client.</summary>
    public static bool IsNoLeader(RpcException ex)
    {
        ArgumentNullException.ThrowIfNull(ex);
        return ex.StatusCode == StatusCode.Unavailable && ex.Status.Detail.StartsWith(ConduitCluster.NoLeaderDetail, StringComparison.Ordinal);
    }

    /// <summary>UNAVAILABLE with ErrorInfo reason NOT_LEADER: a refusal before anything was appended.</summary>
    public static bool IsNotLeader(RpcException ex)
    {
        ArgumentNullException.ThrowIfNull(ex);
        return ex.StatusCode == StatusCode.Unavailable
            && ex.GetRpcStatus()?.GetDetail<Google.Rpc.ErrorInfo>() is { Reason: ConduitCluster.NotLeaderReason };
    }
}
