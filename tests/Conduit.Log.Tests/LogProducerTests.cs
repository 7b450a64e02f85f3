using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Threading.Channels;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Conduit.Services.Log;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Record = Conduit.Protos.Log.V1.Record;

namespace Conduit.Log.Tests;

/// <summary>The client-side producer: records sent one by one travel in ProduceBatch calls by size and linger time, numbered for exactly once unless told otherwise.</summary>
public class LogProducerTests
{
    private static Record Value(string text) => new() { Value = ByteString.CopyFromUtf8(text) };

    [Fact]
    public async Task Records_are_packed_into_batches_by_size_and_get_dense_offsets_in_the_order_sent()
    {
        await using var server = await LogServer.StartAsync();
        var acks = new List<Task<ulong>>();
        await using (var producer = new LogProducer(server.Log, "batched", new LogProducerOptions { MaxBatchBytes = 1000, Linger = TimeSpan.FromSeconds(30) }))
        {
            for (var i = 0; i < 95; i++) acks.Add(await producer.SendAsync(Value($"record-{i:D3}-" + new string('v', 80))));
            // 1000-byte batches of ~95-byte records: the first nine are sent at once, without the (long) linger.
            Assert.Equal(89ul, await acks[89].WaitAsync(TimeSpan.FromSeconds(20)));
            Assert.False(acks[94].IsCompleted); // the last, partly filled batch waits for its linger time
        } // disposing sends it
        for (var i = 0; i < acks.Count; i++) Assert.Equal((ulong)i, await acks[i]);
        var read = await server.Log.ConsumeAsync(new ConsumeRequest { Topic = "batched", Offset = 94 });
        Assert.StartsWith("record-094-", read.Record.Value.ToStringUtf8());
    }

    [Fact]
    public async Task A_lone_record_is_sent_after_the_linger_time_and_a_failed_batch_fails_each_of_its_records()
    {
        await using var server = await LogServer.StartAsync();
        await using var producer = new LogProducer(server.Log, "lone", new LogProducerOptions { Linger = TimeSpan.FromMilliseconds(20) });
        Assert.Equal(0ul, await (await producer.SendAsync(Value("alone"))).WaitAsync(TimeSpan.FromSeconds(20)));

        // Not idempotent (as for proglog): a failed batch fails its records, and the producer goes on.
        await using var bad = new LogProducer(server.Log, "no/such name", new LogProducerOptions { Linger = TimeSpan.FromMilliseconds(20), Idempotent = false });
        var first = await bad.SendAsync(Value("a"));
        var second = await bad.SendAsync(Value("b"));
        Assert.Equal(StatusCode.InvalidArgument, (await Assert.ThrowsAsync<RpcException>(() => first)).StatusCode);
        Assert.Equal(StatusCode.InvalidArgument, (await Assert.ThrowsAsync<RpcException>(() => second)).StatusCode);
        // Idempotent (the default): InitProducer's refusal is no failure a retry fixes; the producer fails at once.
        var refused = await Assert.ThrowsAsync<RpcException>(() => LogProducer.CreateAsync(server.Log, "no/such name"));
        Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);
    }

    [Fact]
    public async Task The_idempotent_producer_numbers_its_batches_so_a_record_is_in_the_log_once_and_batches_stay_under_the_window()
    {
        await using var server = await LogServer.StartAsync();
        await using (var producer = await LogProducer.CreateAsync(server.Log, "numbered", new LogProducerOptions { MaxBatchRecords = 100, Linger = TimeSpan.FromSeconds(30) }))
        {
            Assert.NotEqual(0, producer.ProducerId);
            var acks = new List<Task<ulong>>();
            for (var i = 0; i < 250; i++) acks.Add(await producer.SendAsync(Value($"r{i}")));
            await producer.FlushAsync().WaitAsync(TimeSpan.FromSeconds(20));
            Assert.Equal(Enumerable.Range(0, 250).Select(i => (ulong)i), acks.Select(a => a.Result));
            Assert.Equal(3, producer.Calls); // 100 + 100 + 50 (flushed)
            // The records carry the producer's sequence: a batch sent again by hand is answered, not appended.
            var again = new ProduceBatchRequest { Topic = "numbered", ProducerId = (ulong)producer.ProducerId, ProducerEpoch = (uint)producer.Epoch, Sequence = 100 };
            for (var i = 100; i < 200; i++) again.Records.Add(Value($"r{i}"));
            Assert.Equal(100ul, (await server.Log.ProduceBatchAsync(again)).BaseOffset);
        }
        Assert.Equal(250ul, (await server.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "numbered" })).NextOffset);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_producer_sends_the_next_batch_once_the_previous_one_is_appended_not_once_it_is_durable_and_keeps_order(bool idempotent)
    {
        var files = new FaultyFileSystem();
        using var release = new ManualResetEventSlim(true);
        files.HoldStoreFsyncsWhileReset(release);
        var batchWrites = Channel.CreateUnbounded<int>();
        files.FailWrite = (path, _, length) =>
        {
            // Batches of the 27 records below only (not the first record, the segment header or commit frames).
            if (path.EndsWith(".store", StringComparison.Ordinal) && length > 200) batchWrites.Writer.TryWrite(length);
            return null;
        };
        await using var server = await LogServer.StartAsync(files, Conduit.Storage.Log.Durability.Always);
        await using var producer = await LogProducer.CreateAsync(server.Log, "pipelined", new LogProducerOptions { Idempotent = idempotent, MaxBatchBytes = 1000, MaxBatchRecords = 9, Linger = TimeSpan.FromSeconds(30) });
        var first = await producer.SendAsync(Value("first"));
        await producer.FlushAsync();
        Assert.Equal(0ul, await first.WaitAsync(TimeSpan.FromSeconds(30)));

        var acks = new List<Task<ulong>>();
        release.Reset(); // from now on the store's fsync waits
        try
        {
            for (var i = 0; i < 27; i++) acks.Add(await producer.SendAsync(Value($"record-{i:D3}-" + new string('v', 80))));
            // Two batches reach the store while the first one's fsync is held: the second was sent
            // once the first was appended (or alongside it, idempotent: the server appends in sequence order).
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await batchWrites.Reader.ReadAsync(timeout.Token);
            await batchWrites.Reader.ReadAsync(timeout.Token);
            Assert.DoesNotContain(acks, a => a.IsCompleted); // none is durable yet, so none is acknowledged
        }
        finally
        {
            release.Set(); // a failing assertion must not leave the server's fsync held
        }
        await producer.FlushAsync();
        for (var i = 0; i < acks.Count; i++) Assert.Equal((ulong)i + 1, await acks[i].WaitAsync(TimeSpan.FromSeconds(30)));
        var read = await server.Log.ConsumeAsync(new ConsumeRequest { Topic = "pipelined", Offset = 27 });
        Assert.StartsWith("record-026-", read.Record.Value.ToStringUtf8());
    }

    [Fact]
    public async Task An_idempotent_producer_whose_appended_batch_is_lost_resends_it_and_then_the_batches_sent_after_it_in_order()
    {
        // The first batch is announced appended but never reaches the server (as a batch written
        // and lost with a server killed before its fsync): the second, sent meanwhile, is refused
        // SEQUENCE_GAP. The producer must resend the first, then the second, not give up.
        await using var server = await LogServer.StartAsync();
        var loser = new LoseFirstBatch();
        var client = new Protos.Log.V1.Log.LogClient(server.Channel.Intercept(loser));
        await using var producer = await LogProducer.CreateAsync(client, "lost", new LogProducerOptions
        {
            MaxBatchRecords = 10,
            Linger = TimeSpan.FromSeconds(30),
            InitialBackoff = TimeSpan.FromMilliseconds(10),
            MaxBackoff = TimeSpan.FromMilliseconds(50),
        });
        var acks = new List<Task<ulong>>();
        for (var i = 0; i < 30; i++) acks.Add(await producer.SendAsync(Value($"r{i}")));
        await producer.FlushAsync().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(Enumerable.Range(0, 30).Select(i => (ulong)i), acks.Select(a => a.Result));
        // The second batch went while the first was unanswered: the pipeline, not one batch at a time.
        Assert.Equal(["announced 0", "sent 10", "answered 10: OutOfRange", "lost 0"], loser.Events.Take(4));
        using var call = server.Log.ConsumeStream(new ConsumeRequest { Topic = "lost" }, new CallOptions().WithTimeout(TimeSpan.FromSeconds(30)));
        for (var i = 0; i < 30; i++)
        {
            Assert.True(await call.ResponseStream.MoveNext());
            Assert.Equal($"r{i}", call.ResponseStream.Current.Record.Value.ToStringUtf8());
        }
        Assert.Equal(30ul, (await server.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "lost" })).NextOffset);
    }

    [Fact]
    public async Task An_idempotent_producer_has_two_batches_in_flight_and_the_server_appends_them_in_sequence_order_whichever_arrives_first()
    {
        // Batch 0 is held back on the client until the server holds batch 1 (sequence 10), which was
        // sent while batch 0 was not yet written: the server waits for batch 0 instead of answering
        // SEQUENCE_GAP, so no batch is sent twice and the log keeps the order of SendAsync.
        var (listener, held) = ListenForHolds("inorder");
        using var _ = listener;
        // A hold far longer than the test: it checks the order, not the hold's length.
        await using var server = await LogServer.StartAsync(("Conduit:Log:OutOfOrderHoldMs", "60000"));
        var client = new Protos.Log.V1.Log.LogClient(server.Channel.Intercept(new SendFirstBatchAfter(held)));
        await using var producer = await LogProducer.CreateAsync(client, "inorder", new LogProducerOptions { MaxBatchRecords = 10, Linger = TimeSpan.FromSeconds(30) });
        var acks = new List<Task<ulong>>();
        for (var i = 0; i < 20; i++) acks.Add(await producer.SendAsync(Value($"r{i}")));
        await producer.FlushAsync().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(held.IsCompleted, "batch 1 was not held by the server");
        Assert.Equal(Enumerable.Range(0, 20).Select(i => (ulong)i), acks.Select(a => a.Result));
        Assert.Equal(2, producer.Calls);
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal($"r{i}", (await server.Log.ConsumeAsync(new ConsumeRequest { Topic = "inorder", Offset = (ulong)i })).Record.Value.ToStringUtf8());
        }
    }

    /// <summary>Completes when the server holds its first request of <paramref name="topic"/> (the conduit.log.held counter).</summary>
    internal static (MeterListener Listener, Task Held) ListenForHolds(string topic)
    {
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == Storage.Log.LogMetrics.MeterName && instrument.Name == "conduit.log.held") l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((_, _, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "topic" && Equals(tag.Value, topic)) held.TrySetResult();
            }
        });
        listener.Start();
        return (listener, held.Task);
    }

    /// <summary>Sends the ProduceBatch of sequence 0 once <paramref name="after"/> completes (or 10 s have passed); other calls at once.</summary>
    private sealed class SendFirstBatchAfter(Task after) : Interceptor
    {
        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context, AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            if (request is not ProduceBatchRequest { Sequence: 0 }) return continuation(request, context);
            var call = Task.Run(async () =>
            {
                await after.WaitAsync(TimeSpan.FromSeconds(10)).ContinueWith(_ => { }, TaskScheduler.Default);
                return continuation(request, context);
            });
            return new AsyncUnaryCall<TResponse>(
                call.ContinueWith(c => c.Result.ResponseAsync, TaskScheduler.Default).Unwrap(),
                call.ContinueWith(c => c.Result.ResponseHeadersAsync, TaskScheduler.Default).Unwrap(),
                () => call.Result.GetStatus(),
                () => call.Result.GetTrailers(),
                () => call.ContinueWith(c => c.Result.Dispose(), TaskScheduler.Default));
        }
    }

    /// <summary>
    /// Answers the first ProduceBatch of sequence 0 with an "appended" header without sending it
    /// on, and fails it UNAVAILABLE once the call of sequence 10 is answered (or after 10 s).
    /// </summary>
    private sealed class LoseFirstBatch : Interceptor
    {
        private readonly TaskCompletionSource _nextAnswered = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _lost;
        private int _next;

        public ConcurrentQueue<string> Events { get; } = new();

        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context, AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            if (request is ProduceBatchRequest { Sequence: 0 } && Interlocked.Exchange(ref _lost, 1) == 0)
            {
                Events.Enqueue("announced 0");
                var headers = new Metadata { { LogService.AppendedHeader, "0" } };
                var response = LoseAsync();
                return new AsyncUnaryCall<TResponse>(response, Task.FromResult(headers), () => new Status(StatusCode.Unavailable, "lost"), () => [], () => { });

                async Task<TResponse> LoseAsync()
                {
                    await _nextAnswered.Task.WaitAsync(TimeSpan.FromSeconds(10)).ContinueWith(_ => { }, TaskScheduler.Default);
                    Events.Enqueue("lost 0");
                    throw new RpcException(new Status(StatusCode.Unavailable, "the connection was cut (test)"));
                }
            }
            var call = continuation(request, context);
            if (request is ProduceBatchRequest { Sequence: 10 } && Interlocked.Exchange(ref _next, 1) == 0)
            {
                Events.Enqueue("sent 10");
                _ = call.ResponseAsync.ContinueWith(t =>
                {
                    Events.Enqueue($"answered 10: {(t.Exception?.InnerException as RpcException)?.StatusCode.ToString() ?? "OK"}");
                    _nextAnswered.TrySetResult();
                }, TaskScheduler.Default);
            }
            return call;
        }
    }
}
