using Conduit.Protos.Log.V1;
using Grpc.Core;

namespace Conduit.Services.Log;

/// <summary>How an <see cref="IdempotentProducer"/> behaves.</summary>
public sealed record IdempotentProducerOptions
{
    /// <summary>
    /// Records sent and not yet acknowledged, at most; <see cref="IdempotentProducer.SendAsync"/>
    /// waits while this many are. Keep it below the server's producer window
    /// (Conduit:Log:ProducerWindow, 1024 by default): a retry older than the window is recognised
    /// as a duplicate but without its offset.
    /// </summary>
    public int MaxInFlight { get; init; } = 256;

    /// <summary>The wait before the first reconnect; doubled after each failed attempt (with jitter) up to <see cref="MaxBackoff"/>.</summary>
    public TimeSpan InitialBackoff { get; init; } = TimeSpan.FromMilliseconds(100);

    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// The id of a producer that ran before (a restart of the same producer): it gets a new epoch,
    /// which fences the old instance. Null: a new producer.
    /// </summary>
    public long? ProducerId { get; init; }

    /// <summary>Sent with every call (e.g. authorization), besides what the call invoker adds.</summary>
    public Metadata? Headers { get; init; }

    /// <summary>Told about each reconnect (the failure and the wait), e.g. for a --verbose print.</summary>
    public Action<string>? OnRetry { get; init; }
}

/// <summary>
/// A producer that writes each record to one topic exactly once, across dropped connections and
/// server restarts (docs/client.md, "The idempotent producer"). It gets an id and epoch from
/// log.v1.Log/InitProducer, numbers its records 0, 1, 2, ... and sends them on a ProduceStream;
/// it keeps every record until the server acknowledges it, and after a failed stream opens a new
/// one and sends again from the first unacknowledged record. The server appends a record only
/// once per sequence and answers a retry with the offset the record got.
/// <para>
/// Errors a retry cannot fix end the producer: every record not yet acknowledged and every later
/// call fail with the server's status (FAILED_PRECONDITION: a newer instance of this producer took
/// over; OUT_OF_RANGE: the server lost records it had acknowledged, which durability
/// <c>always</c> rules out; INVALID_ARGUMENT, PERMISSION_DENIED and the like). Thread-safe.
/// </para>
/// </summary>
public sealed class IdempotentProducer : IAsyncDisposable
{
    private readonly Protos.Log.V1.Log.LogClient _client;
    private readonly IdempotentProducerOptions _options;
    private readonly object _lock = new();
    private readonly List<Pending> _unacknowledged = new(); // oldest first
    private readonly SemaphoreSlim _window;
    private readonly CancellationTokenSource _stop = new();
    private TaskCompletionSource _more = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _nextSequence;
    private int _sentOnStream; // how many of _unacknowledged went out on the current stream
    private Exception? _failure;
    private Task _loop = Task.CompletedTask;
    private int _streams;

    private sealed record Pending(ProduceRequest Request, TaskCompletionSource<long> Acknowledged);

    private IdempotentProducer(Protos.Log.V1.Log.LogClient client, string topic, long producerId, int epoch, IdempotentProducerOptions options)
    {
        _client = client;
        Topic = topic;
        ProducerId = producerId;
        Epoch = epoch;
        _options = options;
        _window = new SemaphoreSlim(options.MaxInFlight, options.MaxInFlight);
    }

    public string Topic { get; }

    public long ProducerId { get; }

    public int Epoch { get; }

    /// <summary>ProduceStream calls opened so far: 1 plus the reconnects.</summary>
    public int Streams => Volatile.Read(ref _streams);

    /// <summary>Asks the server for an id and epoch (retrying while it is unreachable), then starts sending.</summary>
    public static async Task<IdempotentProducer> CreateAsync(CallInvoker invoker, string topic, IdempotentProducerOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new IdempotentProducerOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxInFlight, 1);
        var client = new Protos.Log.V1.Log.LogClient(invoker);
        var request = new InitProducerRequest { Topic = topic ?? "", ProducerId = (ulong)(options.ProducerId ?? 0) };
        var backoff = options.InitialBackoff;
        while (true)
        {
            try
            {
                var reply = await client.InitProducerAsync(request, new CallOptions(options.Headers, cancellationToken: cancellationToken).WithWaitForReady()).ConfigureAwait(false);
                var producer = new IdempotentProducer(client, request.Topic, (long)reply.ProducerId, (int)reply.ProducerEpoch, options);
                producer._loop = Task.Run(producer.RunAsync, CancellationToken.None);
                return producer;
            }
            catch (RpcException ex) when (IsTransient(ex.StatusCode) && !cancellationToken.IsCancellationRequested)
            {
                options.OnRetry?.Invoke($"InitProducer failed ({ex.StatusCode}: {ex.Status.Detail}); retrying in {backoff.TotalMilliseconds:0} ms");
                await Task.Delay(backoff, cancellationToken).ConfigureAwait(false);
                backoff = Next(backoff, options.MaxBackoff);
            }
        }
    }

    /// <summary>
    /// Queues a record (waiting while <see cref="IdempotentProducerOptions.MaxInFlight"/> are
    /// unacknowledged) and gives a task that completes with its offset once the server has made it
    /// durable. Records are appended in the order of these calls.
    /// </summary>
    public async Task<Task<long>> SendAsync(Record record, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(record);
        ThrowIfFailed();
        await _window.WaitAsync(cancellationToken).ConfigureAwait(false);
        var pending = new Pending(new ProduceRequest { Topic = Topic, Record = record, ProducerId = (ulong)ProducerId, ProducerEpoch = (uint)Epoch },
            new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously));
        TaskCompletionSource more;
        lock (_lock)
        {
            if (_failure is not null)
            {
                _window.Release();
                throw Failed();
            }
            pending.Request.Sequence = (ulong)_nextSequence++;
            _unacknowledged.Add(pending);
            more = _more;
            _more = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }
        more.TrySetResult();
        return pending.Acknowledged.Task;
    }

    /// <summary>Sends a record and waits for its offset.</summary>
    public async Task<long> ProduceAsync(Record record, CancellationToken cancellationToken = default) =>
        await (await SendAsync(record, cancellationToken).ConfigureAwait(false)).WaitAsync(cancellationToken).ConfigureAwait(false);

    /// <summary>Waits until every record sent so far is acknowledged (or the producer failed: then throws its error).</summary>
    public async Task FlushAsync(CancellationToken cancellationToken = default)
    {
        Task[] waiting;
        lock (_lock) waiting = [.. _unacknowledged.Select(p => (Task)p.Acknowledged.Task)];
        await Task.WhenAll(waiting).WaitAsync(cancellationToken).ConfigureAwait(false);
        ThrowIfFailed();
    }

    private void ThrowIfFailed()
    {
        lock (_lock)
        {
            if (_failure is not null) throw Failed();
        }
    }

    private Exception Failed() => _failure is RpcException rpc ? new RpcException(rpc.Status, rpc.Trailers, rpc.Message) : new InvalidOperationException("The producer stopped.", _failure);

    /// <summary>One ProduceStream after another, until the producer is disposed or fails for good.</summary>
    private async Task RunAsync()
    {
        var backoff = _options.InitialBackoff;
        while (!_stop.IsCancellationRequested)
        {
            var acknowledgedBefore = 0L;
            try
            {
                Interlocked.Increment(ref _streams);
                acknowledgedBefore = await StreamAsync().ConfigureAwait(false);
                // The server ended the stream without an error: open the next one.
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                break;
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled && _stop.IsCancellationRequested)
            {
                break;
            }
            catch (RpcException ex) when (!IsTransient(ex.StatusCode))
            {
                Fail(ex);
                return;
            }
            catch (Exception ex)
            {
                _options.OnRetry?.Invoke($"ProduceStream to topic '{Topic}' failed ({(ex is RpcException r ? $"{r.StatusCode}: {r.Status.Detail}" : ex.Message)}); resending from the first unacknowledged record in {backoff.TotalMilliseconds:0} ms");
            }
            if (acknowledgedBefore > 0) backoff = _options.InitialBackoff;
            try
            {
                await Task.Delay(Jitter(backoff), _stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            backoff = Next(backoff, _options.MaxBackoff);
        }
        Fail(new ObjectDisposedException(nameof(IdempotentProducer)));
    }

    /// <summary>One stream: sends every unacknowledged record from the first on, then new ones as they come; returns how many were acknowledged.</summary>
    private async Task<long> StreamAsync()
    {
        using var callStop = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        using var call = _client.ProduceStream(new CallOptions(_options.Headers, cancellationToken: callStop.Token).WithWaitForReady());
        lock (_lock) _sentOnStream = 0;
        var writing = WriteAsync(call.RequestStream, callStop);
        long acknowledged = 0;
        try
        {
            await foreach (var response in call.ResponseStream.ReadAllAsync(callStop.Token).ConfigureAwait(false))
            {
                Pending first;
                lock (_lock)
                {
                    if (_unacknowledged.Count == 0 || _sentOnStream == 0) throw new InvalidOperationException("The server acknowledged a record that was not sent.");
                    first = _unacknowledged[0];
                    _unacknowledged.RemoveAt(0);
                    _sentOnStream--;
                }
                acknowledged++;
                first.Acknowledged.TrySetResult((long)response.Offset);
                _window.Release();
            }
        }
        finally
        {
            await callStop.CancelAsync().ConfigureAwait(false);
            try
            {
                await writing.ConfigureAwait(false);
            }
            catch (Exception)
            {
                // The reading side's error says what happened to the stream.
            }
        }
        return acknowledged;
    }

    private async Task WriteAsync(IClientStreamWriter<ProduceRequest> requests, CancellationTokenSource callStop)
    {
        try
        {
            while (!callStop.IsCancellationRequested)
            {
                ProduceRequest? next = null;
                Task more;
                lock (_lock)
                {
                    if (_sentOnStream < _unacknowledged.Count) next = _unacknowledged[_sentOnStream++].Request;
                    more = _more.Task;
                }
                if (next is not null) await requests.WriteAsync(next, callStop.Token).ConfigureAwait(false);
                else await more.WaitAsync(callStop.Token).ConfigureAwait(false);
            }
        }
        catch (Exception) when (!callStop.IsCancellationRequested)
        {
            // The stream broke while sending: end the reading side too, so the stream is opened again.
            await callStop.CancelAsync().ConfigureAwait(false);
            throw;
        }
    }

    private void Fail(Exception error)
    {
        Pending[] failed;
        lock (_lock)
        {
            _failure ??= error;
            failed = [.. _unacknowledged];
            _unacknowledged.Clear();
        }
        foreach (var p in failed) p.Acknowledged.TrySetException(error);
        // Their window slots too: a sender waiting for one would otherwise wait forever; it now
        // gets in, sees the failure and throws it.
        try
        {
            if (failed.Length > 0) _window.Release(failed.Length);
        }
        catch (ObjectDisposedException)
        {
            // Disposed meanwhile: nobody waits any more.
        }
    }

    /// <summary>Failures of the connection or the server's state, not of the request: worth sending again.</summary>
    private static bool IsTransient(StatusCode code) => code is StatusCode.Unavailable or StatusCode.Internal or StatusCode.Unknown
        or StatusCode.Cancelled or StatusCode.DeadlineExceeded or StatusCode.ResourceExhausted or StatusCode.Aborted;

    private static TimeSpan Next(TimeSpan backoff, TimeSpan max) => TimeSpan.FromTicks(Math.Min(max.Ticks, backoff.Ticks * 2));

    private static TimeSpan Jitter(TimeSpan backoff) => backoff * (0.5 + Random.Shared.NextDouble() / 2);

    /// <summary>Stops sending; records not yet acknowledged fail with <see cref="ObjectDisposedException"/> (call <see cref="FlushAsync"/> first to wait for them).</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await _loop.ConfigureAwait(false);
        _stop.Dispose();
        _window.Dispose();
    }
}
