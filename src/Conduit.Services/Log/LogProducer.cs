using System.Diagnostics;
using System.Threading.Channels;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Grpc.Core;

namespace Conduit.Services.Log;

/// <summary>Settings of <see cref="LogProducer"/> (as Kafka's batch.size, linger.ms, enable.idempotence, delivery.timeout.ms).</summary>
public sealed class LogProducerOptions
{
    /// <summary>A batch is sent once its records take this many bytes (encoded); default 1 MiB, at most 3 MiB (under the 4 MiB message limit).</summary>
    public int MaxBatchBytes { get; set; } = 1024 * 1024;

    /// <summary>
    /// An idempotent producer's batch is sent once it holds this many records; default 1000. The
    /// records of <see cref="MaxQueuedBatches"/> + 1 batches must stay within the server's producer
    /// window (Conduit:Log:ProducerWindow, 8192 by default): a resent batch older than the window
    /// is recognised as a duplicate without its offset (ALREADY_EXISTS), which ends the producer.
    /// </summary>
    public int MaxBatchRecords { get; set; } = 1000;

    /// <summary>How long the first record of a batch waits for others before the batch is sent anyway; default 5 ms.</summary>
    public TimeSpan Linger { get; set; } = TimeSpan.FromMilliseconds(5);

    /// <summary>
    /// Exactly once (the default, as Kafka's enable.idempotence): the producer gets an id and epoch
    /// from log.v1.Log/InitProducer, numbers its records, and resends a batch whose call failed in
    /// a way a retry may fix (a dropped connection, a server restart, a leader change) until it is
    /// acknowledged; the server appends each record once. False: plain ProduceBatch calls, for
    /// servers without InitProducer (proglog); a failed batch fails its records, and is not resent.
    /// </summary>
    public bool Idempotent { get; set; } = true;

    /// <summary>
    /// ProduceBatch calls at once whose batch is not yet written. A call whose batch the server
    /// reports written (<see cref="LogService.AppendedHeader"/>: a single node under durability
    /// <c>always</c>) stops counting while it waits for its fsync, so the next batch travels
    /// meanwhile. Default (null): 1 when not idempotent, since two calls side by side may be
    /// appended in either order; <see cref="DefaultIdempotentInFlight"/> when idempotent, since the
    /// server appends an idempotent producer's batches in sequence order whatever order they arrive
    /// in (a batch a moment ahead of its predecessor is held for it: docs/log.md).
    /// </summary>
    public int? MaxInFlight { get; set; }

    /// <summary>An idempotent producer's calls in flight when <see cref="MaxInFlight"/> is not set.</summary>
    public const int DefaultIdempotentInFlight = 2;

    /// <summary>Batches (sealed, not yet answered) the producer holds before <see cref="LogProducer.SendAsync"/> waits: back-pressure.</summary>
    public int MaxQueuedBatches { get; set; } = 4;

    /// <summary>
    /// The id of a producer that ran before (a restart of the same producer): it gets a new epoch,
    /// which fences the old instance at once. Null: a new producer. Idempotent only.
    /// </summary>
    public long? ProducerId { get; set; }

    /// <summary>The wait before the first resend; doubled after each failed attempt (with jitter) up to <see cref="MaxBackoff"/>.</summary>
    public TimeSpan InitialBackoff { get; set; } = TimeSpan.FromMilliseconds(100);

    public TimeSpan MaxBackoff { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long an idempotent producer keeps resending a batch (and asking InitProducer) before it
    /// gives up; then the producer fails for good, since its later sequences would leave a gap.
    /// Default 2 minutes (Kafka's delivery.timeout.ms).
    /// </summary>
    public TimeSpan DeliveryTimeout { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>Told about each resend (the failure and the wait), e.g. for a --verbose print.</summary>
    public Action<string>? OnRetry { get; set; }
}

/// <summary>
/// The client-side producer for log.v1.Log (docs/client.md, "The producer"): records sent one by
/// one are packed into ProduceBatch calls by size (<see cref="LogProducerOptions.MaxBatchBytes"/>,
/// <see cref="LogProducerOptions.MaxBatchRecords"/>) and time (<see cref="LogProducerOptions.Linger"/>),
/// so a producer of many small records pays one message, one append and one fsync per batch
/// instead of per record. Each record's task completes with its offset once the server has made
/// the whole batch durable. Idempotent by default: each batch carries the producer's id, epoch and
/// first sequence, and is resent after a failure a retry may fix, so each record is appended
/// exactly once and in the order of <see cref="SendAsync"/>, across dropped connections, server
/// restarts and leader changes. Errors a retry cannot fix (FAILED_PRECONDITION: a newer instance
/// of this producer took over; OUT_OF_RANGE: the server lost records it had acknowledged;
/// INVALID_ARGUMENT, PERMISSION_DENIED, ...) end an idempotent producer: every record not yet
/// acknowledged and every later send fail with the server's status. Thread-safe.
/// </summary>
public sealed class LogProducer : IAsyncDisposable
{
    /// <summary>What a repeated Record field costs besides the record: a tag and a length of up to 3 bytes (records are under 4 MiB).</summary>
    private const int FieldOverhead = 4;

    private readonly Protos.Log.V1.Log.LogClient _client;
    private readonly string _topic;
    private readonly LogProducerOptions _options;
    private readonly Func<CallOptions> _callOptions;
    private readonly Channel<Batch> _sealed;
    private readonly SemaphoreSlim _slots;
    private readonly Task _initialized;
    private readonly Task _sender;
    private readonly object _lock = new();
    private readonly List<Task> _inFlight = [];
    private readonly List<Batch> _unanswered = []; // sealed, not yet answered, oldest first
    private Batch _current = new();
    private int _pending; // batches sealed and not yet answered
    private TaskCompletionSource? _room;
    private bool _completed;
    private Exception? _failure;
    private long _nextSequence;
    private int _calls;

    public LogProducer(Protos.Log.V1.Log.LogClient client, string topic, LogProducerOptions? options = null, Func<CallOptions>? callOptions = null)
    {
        ArgumentNullException.ThrowIfNull(client);
        _client = client;
        _topic = topic ?? "";
        _options = options ?? new LogProducerOptions();
        if (_options.MaxBatchBytes is < 1 or > 3 * 1024 * 1024) throw new ArgumentOutOfRangeException(nameof(options), "MaxBatchBytes is 1 byte to 3 MiB.");
        if (_options.MaxInFlight is < 1 || _options.MaxQueuedBatches < 1 || _options.MaxBatchRecords < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxInFlight, MaxQueuedBatches and MaxBatchRecords are at least 1.");
        _callOptions = callOptions ?? (() => default);
        _sealed = Channel.CreateUnbounded<Batch>(new UnboundedChannelOptions { SingleReader = true });
        _slots = new SemaphoreSlim(_options.MaxInFlight ?? (_options.Idempotent ? LogProducerOptions.DefaultIdempotentInFlight : 1));
        _initialized = _options.Idempotent ? Task.Run(InitAsync) : Task.CompletedTask;
        _sender = Task.Run(SendLoop);
    }

    /// <summary>A producer whose InitProducer has been answered (idempotent), so <see cref="ProducerId"/> and <see cref="Epoch"/> are known; throws its error.</summary>
    public static async Task<LogProducer> CreateAsync(Protos.Log.V1.Log.LogClient client, string topic, LogProducerOptions? options = null, Func<CallOptions>? callOptions = null, CancellationToken cancellationToken = default)
    {
        var producer = new LogProducer(client, topic, options, callOptions);
        try
        {
            await producer._initialized.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await producer.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        return producer;
    }

    /// <summary>The producer id InitProducer gave (0: not idempotent, or not answered yet).</summary>
    public long ProducerId { get; private set; }

    /// <summary>The epoch InitProducer gave.</summary>
    public int Epoch { get; private set; }

    /// <summary>ProduceBatch calls made so far, resends included.</summary>
    public int Calls => Volatile.Read(ref _calls);

    /// <summary>
    /// Adds a record to the current batch. The returned ValueTask completes once the record is
    /// queued (it waits while <see cref="LogProducerOptions.MaxQueuedBatches"/> batches are
    /// unanswered: back-pressure); the inner task completes with its offset once it is durable.
    /// </summary>
    public async ValueTask<Task<ulong>> SendAsync(Record record, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(record);
        var size = record.CalculateSize() + FieldOverhead;
        while (true)
        {
            Task room;
            lock (_lock)
            {
                ObjectDisposedException.ThrowIf(_completed, this);
                if (_failure is not null) throw Failed();
                if (_pending < _options.MaxQueuedBatches)
                {
                    if (_current.Records.Count > 0 && _current.Bytes + size > _options.MaxBatchBytes) Seal();
                    var ack = _current.Add(record, size);
                    var lingerStart = _current.Records.Count == 1;
                    if (_current.Bytes >= _options.MaxBatchBytes || (_options.Idempotent && _current.Records.Count >= _options.MaxBatchRecords)) Seal();
                    else if (lingerStart) _ = LingerAsync(_current);
                    return ack.Task;
                }
                room = (_room ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
            }
            await room.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Sends a record and waits for its offset.</summary>
    public async Task<ulong> ProduceAsync(Record record, CancellationToken cancellationToken = default) =>
        await (await SendAsync(record, cancellationToken).ConfigureAwait(false)).WaitAsync(cancellationToken).ConfigureAwait(false);

    /// <summary>
    /// Sends what is batched now, without waiting for the linger time, and waits until every
    /// record sent so far is answered; throws the error of an idempotent producer that failed.
    /// </summary>
    public async Task FlushAsync(CancellationToken cancellationToken = default)
    {
        Task[] waiting;
        lock (_lock)
        {
            if (_current.Records.Count > 0) Seal();
            waiting = [.. _unanswered.SelectMany(b => b.Acks).Select(a => (Task)a.Task)];
        }
        try
        {
            await Task.WhenAll(waiting).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception) when (!cancellationToken.IsCancellationRequested)
        {
            // Each record's task holds its own error; an idempotent producer's failure is thrown below.
        }
        lock (_lock)
        {
            if (_failure is not null) throw Failed();
        }
    }

    /// <summary>Under the lock: queues the current batch (in order: the queue is unbounded, the room is counted by _pending).</summary>
    private void Seal()
    {
        var batch = _current;
        _current = new Batch();
        _pending++;
        _unanswered.Add(batch);
        if (!_sealed.Writer.TryWrite(batch)) batch.Fail(new ObjectDisposedException(nameof(LogProducer)));
    }

    private async Task LingerAsync(Batch batch)
    {
        // The linger itself: how long a batch waits for more records before it is sent anyway.
        await Task.Delay(_options.Linger).ConfigureAwait(false);
        lock (_lock)
        {
            if (ReferenceEquals(_current, batch) && batch.Records.Count > 0) Seal();
        }
    }

    private void Answered(Batch batch)
    {
        TaskCompletionSource? room;
        lock (_lock)
        {
            _pending--;
            _unanswered.Remove(batch);
            room = _room;
            _room = null;
        }
        room?.TrySetResult();
    }

    private Exception Failed() => _failure is RpcException rpc ? new RpcException(rpc.Status, rpc.Trailers, rpc.Message) : new InvalidOperationException("The producer stopped.", _failure);

    private void Fail(Exception error)
    {
        lock (_lock) _failure ??= error;
    }

    /// <summary>InitProducer, resent while a retry may fix its failure (within the delivery timeout).</summary>
    private async Task InitAsync()
    {
        var request = new InitProducerRequest { Topic = _topic, ProducerId = (ulong)(_options.ProducerId ?? 0) };
        var clock = Stopwatch.StartNew();
        var backoff = _options.InitialBackoff;
        while (true)
        {
            try
            {
                var reply = await _client.InitProducerAsync(request, Attempt(clock)).ConfigureAwait(false);
                (ProducerId, Epoch) = ((long)reply.ProducerId, (int)reply.ProducerEpoch);
                return;
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.Unimplemented)
            {
                throw new RpcException(new Status(StatusCode.Unimplemented, $"The server has no log.v1.Log/InitProducer (proglog?): an idempotent producer needs it. Produce without idempotence there (LogProducerOptions.Idempotent = false, `conduit log produce --no-idempotent`). ({ex.Status.Detail})"));
            }
            catch (RpcException ex) when (IsTransient(ex.StatusCode) && clock.Elapsed < _options.DeliveryTimeout)
            {
                _options.OnRetry?.Invoke($"InitProducer failed ({ex.StatusCode}: {ex.Status.Detail}); retrying in {backoff.TotalMilliseconds:0} ms");
                await Task.Delay(Jitter(backoff)).ConfigureAwait(false);
                backoff = Next(backoff, _options.MaxBackoff);
            }
        }
    }

    /// <summary>The caller's call options, waiting for a connection, with a deadline no later than the delivery timeout.</summary>
    private CallOptions Attempt(Stopwatch clock)
    {
        var options = _callOptions().WithWaitForReady();
        var last = DateTime.UtcNow + (_options.DeliveryTimeout - clock.Elapsed);
        return options.Deadline is { } deadline && deadline < last ? options : options.WithDeadline(last);
    }

    private async Task SendLoop()
    {
        try
        {
            await _initialized.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            Fail(ex);
        }
        Batch? previous = null;
        await foreach (var batch in _sealed.Reader.ReadAllAsync().ConfigureAwait(false))
        {
            await _slots.WaitAsync().ConfigureAwait(false);
            // The slot comes back once this batch is written (announced) or answered. Idempotent
            // batches in flight together may reach the topic in any order: the server holds one
            // that is ahead of its predecessor (SequenceHold), so they are appended in sequence order.
            var call = _options.Idempotent ? SendIdempotentAsync(batch, previous) : SendAsync(batch);
            previous = batch;
            lock (_inFlight)
            {
                _inFlight.RemoveAll(t => t.IsCompleted);
                _inFlight.Add(call);
            }
        }
        Task[] calls;
        lock (_inFlight) calls = [.. _inFlight];
        await Task.WhenAll(calls).ConfigureAwait(false);
    }

    private async Task SendAsync(Batch batch)
    {
        var slotReleased = false;
        try
        {
            var request = new ProduceBatchRequest { Topic = _topic };
            request.Records.AddRange(batch.Records);
            Interlocked.Increment(ref _calls);
            using var call = _client.ProduceBatchAsync(request, _callOptions());
            // A single node under `always` says when the batch is written (its offsets fixed) and
            // before its fsync: the slot goes to the next batch then, which is thus appended after
            // this one and covered by the next group commit, while this one's answer waits for the fsync.
            if ((await call.ResponseHeadersAsync.ConfigureAwait(false)).GetValue(LogService.AppendedHeader) is not null)
            {
                slotReleased = true;
                _slots.Release();
            }
            var reply = await call.ResponseAsync.ConfigureAwait(false);
            batch.Succeed(reply.BaseOffset);
        }
        catch (Exception ex)
        {
            batch.Fail(ex);
        }
        finally
        {
            if (!slotReleased) _slots.Release();
            Answered(batch);
        }
    }

    /// <summary>
    /// Sends a batch with the producer's id, epoch and its first sequence, again and again while a
    /// retry may fix the failure. Pipelined: the slot goes back (the next batch may be sent) once
    /// the server announces this batch written (<see cref="LogService.AppendedHeader"/>). A resend
    /// waits until <paramref name="previous"/> is answered, so resends reach the server in sequence
    /// order; a SEQUENCE_GAP for a batch sent while its predecessor was unanswered means that
    /// predecessor was lost on its way (or with a server that died before its fsync): it is resent
    /// first, then this one.
    /// </summary>
    private async Task SendIdempotentAsync(Batch batch, Batch? previous)
    {
        var slotReleased = false;
        try
        {
            lock (_lock)
            {
                if (_failure is not null)
                {
                    batch.Fail(Failed());
                    return;
                }
            }
            var request = new ProduceBatchRequest { Topic = _topic, ProducerId = (ulong)ProducerId, ProducerEpoch = (uint)Epoch, Sequence = (ulong)_nextSequence };
            _nextSequence += batch.Records.Count;
            request.Records.AddRange(batch.Records);
            var clock = Stopwatch.StartNew();
            var backoff = _options.InitialBackoff;
            for (var attempt = 0; ; attempt++)
            {
                var previousUnanswered = previous is not null && !previous.Answered.IsCompleted;
                if (attempt > 0 && previousUnanswered)
                {
                    // Resends go in sequence order: after the batch before this one is answered.
                    await previous!.Answered.ConfigureAwait(false);
                    previousUnanswered = false;
                }
                lock (_lock)
                {
                    if (_failure is not null) throw Failed();
                }
                try
                {
                    Interlocked.Increment(ref _calls);
                    using var call = _client.ProduceBatchAsync(request, Attempt(clock));
                    if (!slotReleased && (await call.ResponseHeadersAsync.ConfigureAwait(false)).GetValue(LogService.AppendedHeader) is not null)
                    {
                        slotReleased = true;
                        _slots.Release();
                    }
                    var reply = await call.ResponseAsync.ConfigureAwait(false);
                    batch.Succeed(reply.BaseOffset);
                    return;
                }
                catch (RpcException ex) when (previousUnanswered && IsSequenceGap(ex) && clock.Elapsed < _options.DeliveryTimeout)
                {
                    _options.OnRetry?.Invoke($"ProduceBatch to topic '{_topic}' from sequence {request.Sequence}: the batch before it did not reach the server ({ex.Status.Detail}); resending after it");
                }
                catch (RpcException ex) when (IsTransient(ex.StatusCode) && clock.Elapsed < _options.DeliveryTimeout)
                {
                    _options.OnRetry?.Invoke($"ProduceBatch to topic '{_topic}' failed ({ex.StatusCode}: {ex.Status.Detail}); resending {batch.Records.Count} record(s) from sequence {request.Sequence} in {backoff.TotalMilliseconds:0} ms");
                    await Task.Delay(Jitter(backoff)).ConfigureAwait(false);
                    backoff = Next(backoff, _options.MaxBackoff);
                }
            }
        }
        catch (Exception ex)
        {
            // Its later sequences would leave a gap: the producer stops here.
            Fail(ex);
            batch.Fail(Failed());
        }
        finally
        {
            if (!slotReleased) _slots.Release();
            Answered(batch);
        }
    }

    private static bool IsSequenceGap(RpcException ex) =>
        ex.StatusCode == StatusCode.OutOfRange && ex.GetDetail<Google.Rpc.ErrorInfo>() is { Reason: "SEQUENCE_GAP" };

    /// <summary>Failures of the connection or the server's state, not of the request: worth sending again (idempotent only).</summary>
    private static bool IsTransient(StatusCode code) => code is StatusCode.Unavailable or StatusCode.Internal or StatusCode.Unknown
        or StatusCode.Cancelled or StatusCode.DeadlineExceeded or StatusCode.ResourceExhausted or StatusCode.Aborted;

    private static TimeSpan Next(TimeSpan backoff, TimeSpan max) => TimeSpan.FromTicks(Math.Min(max.Ticks, backoff.Ticks * 2));

    private static TimeSpan Jitter(TimeSpan backoff) => backoff * (0.5 + Random.Shared.NextDouble() / 2);

    /// <summary>Sends what is batched and waits until every record sent is answered (an idempotent producer resends within its delivery timeout).</summary>
    public async ValueTask DisposeAsync()
    {
        lock (_lock)
        {
            if (_completed) return;
            _completed = true;
            if (_current.Records.Count > 0) Seal();
            _sealed.Writer.Complete();
        }
        await _sender.ConfigureAwait(false);
        _slots.Dispose();
    }

    private sealed class Batch
    {
        public List<Record> Records { get; } = [];
        public List<TaskCompletionSource<ulong>> Acks { get; } = [];
        public int Bytes { get; private set; }

        private readonly TaskCompletionSource _answered = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Completes (never faults) once the batch is acknowledged or has failed for good.</summary>
        public Task Answered => _answered.Task;

        public TaskCompletionSource<ulong> Add(Record record, int size)
        {
            var ack = new TaskCompletionSource<ulong>(TaskCreationOptions.RunContinuationsAsynchronously);
            Records.Add(record);
            Acks.Add(ack);
            Bytes += size;
            return ack;
        }

        public void Succeed(ulong baseOffset)
        {
            for (var i = 0; i < Acks.Count; i++) Acks[i].TrySetResult(baseOffset + (ulong)i);
            _answered.TrySetResult();
        }

        public void Fail(Exception ex)
        {
            foreach (var ack in Acks) ack.TrySetException(ex);
            _answered.TrySetResult();
        }
    }
}
