using System.Threading.Channels;
using Conduit.Protos.Log.V1;
using Grpc.Core;

namespace Conduit.Services.Log;

/// <summary>Settings of <see cref="LogProducer"/> (as Kafka's batch.size, linger.ms, max.in.flight).</summary>
public sealed class LogProducerOptions
{
    /// <summary>A batch is sent once its records take this many bytes (encoded); default 1 MiB, at most 3 MiB (under the 4 MiB message limit).</summary>
    public int MaxBatchBytes { get; set; } = 1024 * 1024;

    /// <summary>How long the first record of a batch waits for others before the batch is sent anyway; default 5 ms.</summary>
    public TimeSpan Linger { get; set; } = TimeSpan.FromMilliseconds(5);

    /// <summary>
    /// ProduceBatch calls at once whose batch is not yet written. 1 (the default) keeps the records'
    /// order on the log the order they were sent in. A call whose batch the server reports written
    /// (<see cref="LogService.AppendedHeader"/>: a single node under durability <c>always</c>) stops
    /// counting while it waits for its fsync, so the next batch travels meanwhile, still in order.
    /// </summary>
    public int MaxInFlight { get; set; } = 1;

    /// <summary>Batches (sealed, not yet answered) the producer holds before <see cref="LogProducer.SendAsync"/> waits: back-pressure.</summary>
    public int MaxQueuedBatches { get; set; } = 4;
}

/// <summary>
/// A client-side batcher for log.v1.Log: records sent one by one are packed into ProduceBatch calls
/// by size (<see cref="LogProducerOptions.MaxBatchBytes"/>) and time
/// (<see cref="LogProducerOptions.Linger"/>), so a producer of many small records pays one message,
/// one append and one fsync per batch instead of per record. Each record's task completes with its
/// offset once the server has made the whole batch durable, or fails with the batch's error.
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
    private readonly Task _sender;
    private readonly object _lock = new();
    private readonly List<Task> _inFlight = [];
    private Batch _current = new();
    private int _pending; // batches sealed and not yet answered
    private TaskCompletionSource? _room;
    private bool _completed;

    public LogProducer(Protos.Log.V1.Log.LogClient client, string topic, LogProducerOptions? options = null, Func<CallOptions>? callOptions = null)
    {
        ArgumentNullException.ThrowIfNull(client);
        _client = client;
        _topic = topic ?? "";
        _options = options ?? new LogProducerOptions();
        if (_options.MaxBatchBytes is < 1 or > 3 * 1024 * 1024) throw new ArgumentOutOfRangeException(nameof(options), "MaxBatchBytes is 1 byte to 3 MiB.");
        if (_options.MaxInFlight < 1 || _options.MaxQueuedBatches < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxInFlight and MaxQueuedBatches are at least 1.");
        _callOptions = callOptions ?? (() => default);
        _sealed = Channel.CreateUnbounded<Batch>(new UnboundedChannelOptions { SingleReader = true });
        _slots = new SemaphoreSlim(_options.MaxInFlight);
        _sender = Task.Run(SendLoop);
    }

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
                if (_pending < _options.MaxQueuedBatches)
                {
                    if (_current.Records.Count > 0 && _current.Bytes + size > _options.MaxBatchBytes) Seal();
                    var ack = _current.Add(record, size);
                    var lingerStart = _current.Records.Count == 1;
                    if (_current.Bytes >= _options.MaxBatchBytes) Seal();
                    else if (lingerStart) _ = LingerAsync(_current);
                    return ack.Task;
                }
                room = (_room ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
            }
            await room.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Sends what is batched now, without waiting for the linger time.</summary>
    public Task FlushAsync()
    {
        lock (_lock)
        {
            if (_current.Records.Count > 0) Seal();
        }
        return Task.CompletedTask;
    }

    /// <summary>Under the lock: queues the current batch (in order: the queue is unbounded, the room is counted by _pending).</summary>
    private void Seal()
    {
        var batch = _current;
        _current = new Batch();
        _pending++;
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

    private void Answered()
    {
        TaskCompletionSource? room;
        lock (_lock)
        {
            _pending--;
            room = _room;
            _room = null;
        }
        room?.TrySetResult();
    }

    private async Task SendLoop()
    {
        await foreach (var batch in _sealed.Reader.ReadAllAsync().ConfigureAwait(false))
        {
            await _slots.WaitAsync().ConfigureAwait(false);
            var call = SendAsync(batch);
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
            for (var i = 0; i < batch.Acks.Count; i++) batch.Acks[i].TrySetResult(reply.BaseOffset + (ulong)i);
        }
        catch (Exception ex)
        {
            batch.Fail(ex);
        }
        finally
        {
            if (!slotReleased) _slots.Release();
            Answered();
        }
    }

    /// <summary>Sends what is batched and waits until every record sent is answered.</summary>
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

        public TaskCompletionSource<ulong> Add(Record record, int size)
        {
            var ack = new TaskCompletionSource<ulong>(TaskCreationOptions.RunContinuationsAsynchronously);
            Records.Add(record);
            Acks.Add(ack);
            Bytes += size;
            return ack;
        }

        public void Fail(Exception ex)
        {
            foreach (var ack in Acks) ack.TrySetException(ex);
        }
    }
}
