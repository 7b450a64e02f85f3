using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Conduit.Grpc;

/// <summary>
/// Keeps a handler's reads of its request stream inside its call. A client-streaming or duplex
/// handler that returns (or throws) while a read it started is still pending (a background loop it
/// did not wait for) would leave that read on Kestrel's HTTP/2 stream, which Kestrel pools and
/// gives to a later call on the same connection: the late read then races the next call's reads,
/// which fail with "Reading is already in progress" (grpc/grpc-dotnet#1442), or it hangs. Here the
/// pending read is cancelled and awaited before the call ends, and a read started after the
/// handler returned fails at once without touching the stream.
/// </summary>
public sealed class ReadScopeInterceptor : Interceptor
{
    private readonly TimeSpan _abandonedReadLimit;

    public ReadScopeInterceptor() : this(TimeSpan.FromSeconds(5))
    {
    }

    /// <summary>With another bound on the wait for an abandoned read (tests).</summary>
    internal ReadScopeInterceptor(TimeSpan abandonedReadLimit) => _abandonedReadLimit = abandonedReadLimit;

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        var reader = new ScopedReader<TRequest>(requestStream, context, _abandonedReadLimit);
        Task<TResponse> task;
        try
        {
            task = continuation(reader, context);
        }
        catch (Exception ex)
        {
            task = Task.FromException<TResponse>(ex);
        }
        return reader.EndWhenComplete(task);
    }

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        var reader = new ScopedReader<TRequest>(requestStream, context, _abandonedReadLimit);
        Task task;
        try
        {
            task = continuation(reader, responseStream, context);
        }
        catch (Exception ex)
        {
            task = Task.FromException(ex);
        }
        return reader.EndWhenComplete(task);
    }

    /// <summary>The request stream a handler sees: every read can be cancelled by the end of the call.</summary>
    private sealed class ScopedReader<T>(IAsyncStreamReader<T> inner, ServerCallContext context, TimeSpan abandonedReadLimit) : IAsyncStreamReader<T>
    {
        private readonly Lock _gate = new();
        private readonly CancellationTokenSource _end = new();
        private CancellationTokenSource? _linked;
        private CancellationToken _linkedTo;
        private Task<bool>? _last;
        private bool _ended;

        public T Current => inner.Current;

        public Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            // Held while the read starts (it parses a message already received, up to the receive
            // limit, before it returns): only the end of the call ever waits on it, once, and a
            // read that started unseen by EndAsync would escape its cancellation.
            lock (_gate)
            {
                if (_ended)
                {
                    return Task.FromException<bool>(new InvalidOperationException("Can't read messages after the call's handler has returned."));
                }
                var task = inner.MoveNext(TokenFor(cancellationToken));
                _last = task;
                return task;
            }
        }

        /// <summary>
        /// The end of the call's token, or one linked to the caller's too. Handlers pass the same
        /// token on every read (usually the call's own), so one linked source serves the whole call.
        /// </summary>
        private CancellationToken TokenFor(CancellationToken token)
        {
            if (!token.CanBeCanceled) return _end.Token;
            if (_linked is null || token != _linkedTo)
            {
                _linked?.Dispose();
                _linked = CancellationTokenSource.CreateLinkedTokenSource(_end.Token, token);
                _linkedTo = token;
            }
            return _linked.Token;
        }

        public async Task<TResponse> EndWhenComplete<TResponse>(Task<TResponse> handler)
        {
            try
            {
                return await handler.ConfigureAwait(false);
            }
            finally
            {
                await EndAsync().ConfigureAwait(false);
            }
        }

        public async Task EndWhenComplete(Task handler)
        {
            try
            {
                await handler.ConfigureAwait(false);
            }
            finally
            {
                await EndAsync().ConfigureAwait(false);
            }
        }

        private async Task EndAsync()
        {
            Task<bool>? last;
            lock (_gate)
            {
                _ended = true;
                last = _last;
            }
            if (last is not null && !last.IsCompleted)
            {
                await _end.CancelAsync().ConfigureAwait(false);
                try
                {
                    // Every reader in the chain passes the token on; the limit is a backstop, so a
                    // wrapper that one day drops it costs a call 5 s and a reset, not a hang.
                    await last.WaitAsync(abandonedReadLimit).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    // The read is still pending: reset the stream rather than let Kestrel pool it
                    // with a read in progress (the bug this interceptor exists for). The client
                    // sees the reset instead of the handler's status.
                    context.GetHttpContext().Abort();
                }
#pragma warning disable CA1031 // The handler abandoned this read: however it ended, nobody is waiting for it.
                catch (Exception)
                {
                }
#pragma warning restore CA1031
            }
            lock (_gate) _linked?.Dispose();
            _end.Dispose();
        }
    }
}
