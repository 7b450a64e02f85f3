using System.Diagnostics;
using System.Diagnostics.Metrics;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Conduit.Services.Log;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using Xunit.Abstractions;
using Record = Conduit.Protos.Log.V1.Record;

namespace Conduit.Log.Tests;

/// <summary>
/// The idempotent producer on the wire (log.v1.Log/InitProducer and the producer fields of
/// Produce, ProduceBatch and ProduceStream) and the C# <see cref="LogProducer"/> (idempotent), up to a
/// real `conduit serve` killed with SIGKILL and connections cut mid-stream.
/// </summary>
public class IdempotentProduceTests(ITestOutputHelper output)
{
    private static ProduceRequest Request(string value, ulong producer, uint epoch, ulong sequence, string topic = "t") => new()
    {
        Topic = topic,
        Record = new Record { Value = ByteString.CopyFromUtf8(value) },
        ProducerId = producer,
        ProducerEpoch = epoch,
        Sequence = sequence,
    };

    private static CallOptions Timeout() => new CallOptions().WithTimeout(TimeSpan.FromSeconds(30));

    [Fact]
    public async Task Produce_with_producer_fields_answers_a_retry_with_its_offset_and_refuses_gaps_and_stale_epochs()
    {
        await using var server = await LogServer.StartAsync();
        var init = await server.Log.InitProducerAsync(new InitProducerRequest { Topic = "t" }, Timeout());
        Assert.NotEqual(0ul, init.ProducerId);
        Assert.Equal(0u, init.ProducerEpoch);
        var id = init.ProducerId;
        Assert.Equal(0ul, (await server.Log.ProduceAsync(Request("a", id, 0, 0), Timeout())).Offset);
        Assert.Equal(1ul, (await server.Log.ProduceAsync(Request("b", id, 0, 1), Timeout())).Offset);
        Assert.Equal(0ul, (await server.Log.ProduceAsync(Request("a", id, 0, 0), Timeout())).Offset);
        Assert.Equal(1ul, (await server.Log.ProduceAsync(Request("b", id, 0, 1), Timeout())).Offset);

        var gap = await Assert.ThrowsAsync<RpcException>(() => server.Log.ProduceAsync(Request("d", id, 0, 3), Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.OutOfRange, gap.StatusCode);
        var info = gap.GetDetail<ErrorInfo>()!;
        Assert.Equal("SEQUENCE_GAP", info.Reason);
        Assert.Equal(("2", "3", "t", id.ToString(System.Globalization.CultureInfo.InvariantCulture)), (info.Metadata["expected_sequence"], info.Metadata["sequence"], info.Metadata["topic"], info.Metadata["producer_id"]));
        Assert.Equal("sequence", gap.GetDetail<BadRequest>()!.FieldViolations[0].Field);

        // A restarted instance of the producer: the same id, a new epoch, which fences the old ones at once.
        var again = await server.Log.InitProducerAsync(new InitProducerRequest { Topic = "t", ProducerId = id }, Timeout());
        Assert.Equal((id, 1u), (again.ProducerId, again.ProducerEpoch));
        Assert.Equal(2u, (await server.Log.InitProducerAsync(new InitProducerRequest { Topic = "t", ProducerId = id }, Timeout())).ProducerEpoch);
        var stale = await Assert.ThrowsAsync<RpcException>(() => server.Log.ProduceAsync(Request("c", id, 1, 0), Timeout()).ResponseAsync);
        Assert.Equal(("PRODUCER_FENCED", "2"), (stale.GetDetail<ErrorInfo>()!.Reason, stale.GetDetail<ErrorInfo>()!.Metadata["current_epoch"]));
        Assert.Equal(2ul, (await server.Log.ProduceAsync(Request("c", id, 2, 0), Timeout())).Offset);
        var fenced = await Assert.ThrowsAsync<RpcException>(() => server.Log.ProduceAsync(Request("late", id, 0, 2), Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.FailedPrecondition, fenced.StatusCode);
        Assert.Equal(("PRODUCER_FENCED", "2"), (fenced.GetDetail<ErrorInfo>()!.Reason, fenced.GetDetail<ErrorInfo>()!.Metadata["current_epoch"]));

        var invalid = await Assert.ThrowsAsync<RpcException>(() => server.Log.ProduceAsync(new ProduceRequest { Topic = "t", Record = new Record(), Sequence = 4 }, Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.InvalidArgument, invalid.StatusCode);
        var zero = await Assert.ThrowsAsync<RpcException>(() => server.Log.ProduceAsync(Request("z", 0, 0, 0), Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.InvalidArgument, zero.StatusCode);
        Assert.Equal(3ul, (await server.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "t" }, Timeout())).NextOffset);
    }

    [Fact]
    public async Task A_sender_waiting_for_room_gets_the_failure_of_a_fenced_producer_instead_of_waiting_forever()
    {
        await using var server = await LogServer.StartAsync();
        var options = new LogProducerOptions { MaxQueuedBatches = 1, MaxBatchRecords = 1, Linger = TimeSpan.Zero };
        await using var first = await LogProducer.CreateAsync(server.Log, "fenced", options);
        await (await first.SendAsync(new Record { Value = ByteString.CopyFromUtf8("a") }));
        // A new instance of the same producer asks for an epoch: the first one is fenced from now on.
        await using var second = await LogProducer.CreateAsync(server.Log, "fenced", new LogProducerOptions { ProducerId = first.ProducerId });
        Assert.Equal(first.Epoch + 1, second.Epoch);

        var refused = await first.SendAsync(new Record { Value = ByteString.CopyFromUtf8("c") }); // holds the one batch of room
        var waiting = first.SendAsync(new Record { Value = ByteString.CopyFromUtf8("d") }).AsTask(); // waits for it
        var fenced = await Assert.ThrowsAsync<RpcException>(() => refused.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(StatusCode.FailedPrecondition, fenced.StatusCode);
        var ex = await Assert.ThrowsAnyAsync<Exception>(async () => await (await waiting.WaitAsync(TimeSpan.FromSeconds(10))).WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.IsNotType<TimeoutException>(ex);
    }

    [Fact]
    public async Task A_request_without_the_fields_is_appended_every_time_as_proglog_expects()
    {
        await using var server = await LogServer.StartAsync();
        var request = new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8("same") } };
        Assert.Equal(0ul, (await server.Log.ProduceAsync(request, Timeout())).Offset);
        Assert.Equal(1ul, (await server.Log.ProduceAsync(request, Timeout())).Offset);
        Assert.Equal(0ul, (await server.Log.ConsumeAsync(new ConsumeRequest { Offset = 0 }, Timeout())).Record.Offset);
    }

    private static ProduceBatchRequest Batch(ulong producer, ulong sequence, params string[] values)
    {
        var batch = new ProduceBatchRequest { Topic = "t", ProducerId = producer, Sequence = sequence };
        foreach (var value in values) batch.Records.Add(new Record { Value = ByteString.CopyFromUtf8(value) });
        return batch;
    }

    [Fact]
    public async Task A_batch_that_arrives_ahead_of_its_predecessor_waits_for_it_and_both_are_appended_in_sequence_order()
    {
        // Calls side by side on one connection run on different threads: batch 1 may reach the topic
        // before batch 0. It is held until batch 0 is appended, not answered SEQUENCE_GAP.
        var (listener, held) = LogProducerTests.ListenForHolds("t");
        using var _ = listener;
        // A hold far longer than the test: it checks the order, not the hold's length (a loaded machine may take a while).
        await using var server = await LogServer.StartAsync(("Conduit:Log:OutOfOrderHoldMs", "60000"));
        var id = (await server.Log.InitProducerAsync(new InitProducerRequest { Topic = "t" }, Timeout())).ProducerId;
        using var ahead = server.Log.ProduceBatchAsync(Batch(id, 2, "c", "d"), Timeout());
        await held.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(ahead.ResponseAsync.IsCompleted);
        using var unary = server.Log.ProduceAsync(Request("e", id, 0, 4), Timeout());
        Assert.Equal(0ul, (await server.Log.ProduceBatchAsync(Batch(id, 0, "a", "b"), Timeout())).BaseOffset);
        Assert.Equal(2ul, (await ahead).BaseOffset);
        Assert.Equal(4ul, (await unary).Offset);
        for (var offset = 0ul; offset < 5; offset++)
        {
            var record = (await server.Log.ConsumeAsync(new ConsumeRequest { Topic = "t", Offset = offset }, Timeout())).Record;
            Assert.Equal("abcde"[(int)offset].ToString(), record.Value.ToStringUtf8());
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(300)]
    public async Task A_batch_whose_predecessor_never_comes_is_answered_SEQUENCE_GAP_once_the_hold_is_over(int holdMs)
    {
        await using var server = await LogServer.StartAsync(("Conduit:Log:OutOfOrderHoldMs", holdMs.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        var id = (await server.Log.InitProducerAsync(new InitProducerRequest { Topic = "t" }, Timeout())).ProducerId;
        var clock = Stopwatch.StartNew();
        var gap = await Assert.ThrowsAsync<RpcException>(() => server.Log.ProduceBatchAsync(Batch(id, 5, "x"), Timeout()).ResponseAsync);
        Assert.Equal(("SEQUENCE_GAP", "0"), (gap.GetDetail<ErrorInfo>()!.Reason, gap.GetDetail<ErrorInfo>()!.Metadata["expected_sequence"]));
        Assert.True(clock.ElapsedMilliseconds >= holdMs, $"answered after {clock.ElapsedMilliseconds} ms, before the {holdMs} ms hold");
        Assert.Equal(0ul, (await server.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "t" }, Timeout())).NextOffset);
    }

    [Fact]
    public async Task A_held_call_is_answered_SEQUENCE_GAP_before_its_deadline_not_DEADLINE_EXCEEDED()
    {
        await using var server = await LogServer.StartAsync(("Conduit:Log:OutOfOrderHoldMs", "60000"));
        var id = (await server.Log.InitProducerAsync(new InitProducerRequest { Topic = "t" }, Timeout())).ProducerId;
        var clock = Stopwatch.StartNew();
        // The server keeps a tenth of the time left (500 ms here) for the answer's way back.
        var gap = await Assert.ThrowsAsync<RpcException>(() => server.Log.ProduceBatchAsync(Batch(id, 5, "x"), new CallOptions().WithTimeout(TimeSpan.FromSeconds(5))).ResponseAsync);
        Assert.Equal((StatusCode.OutOfRange, "SEQUENCE_GAP"), (gap.StatusCode, gap.GetDetail<ErrorInfo>()!.Reason));
        Assert.InRange(clock.ElapsedMilliseconds, 3000, 30_000); // held until shortly before the deadline, not answered at once
    }

    [Fact]
    public async Task ProduceBatch_and_ProduceStream_recognise_retries()
    {
        await using var server = await LogServer.StartAsync();
        var id = (await server.Log.InitProducerAsync(new InitProducerRequest { Topic = "t" }, Timeout())).ProducerId;
        var batch = new ProduceBatchRequest { Topic = "t", ProducerId = id, Sequence = 0 };
        batch.Records.Add(new Record { Value = ByteString.CopyFromUtf8("b0") });
        batch.Records.Add(new Record { Value = ByteString.CopyFromUtf8("b1") });
        Assert.Equal(0ul, (await server.Log.ProduceBatchAsync(batch, Timeout())).BaseOffset);
        var retried = await server.Log.ProduceBatchAsync(batch, Timeout());
        Assert.Equal((0ul, 2u), (retried.BaseOffset, retried.Count));

        using var call = server.Log.ProduceStream(Timeout());
        foreach (var seq in new ulong[] { 2, 3, 2, 3, 4, 0 }) await call.RequestStream.WriteAsync(Request($"s{seq}", id, 0, seq));
        await call.RequestStream.CompleteAsync();
        var offsets = new List<ulong>();
        await foreach (var r in call.ResponseStream.ReadAllAsync()) offsets.Add(r.Offset);
        Assert.Equal([2ul, 3, 2, 3, 4, 0], offsets);
        Assert.Equal(5ul, (await server.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "t" }, Timeout())).NextOffset);
    }

    [Fact]
    public async Task The_producer_resends_after_cut_connections_and_the_log_holds_each_record_once()
    {
        // The server's count of retries it did not append again: proof that records were resent after being appended.
        long duplicates = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == Storage.Log.LogMetrics.MeterName && instrument.Name == "conduit.log.duplicates") l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag is { Key: "topic", Value: "cut" }) Interlocked.Add(ref duplicates, value);
            }
        });
        listener.Start();
        await using var server = await LogServer.StartAsync();
        await using var proxy = new CuttingProxy { BackendPort = new Uri(server.Address).Port };
        using var channel = ConduitChannel.ForAddress(proxy.Address);
        var retries = 0;
        await using var producer = await LogProducer.CreateAsync(new Protos.Log.V1.Log.LogClient(channel), "cut", new LogProducerOptions
        {
            // Small batches, so that many calls meet the cuts.
            MaxBatchRecords = 8,
            Linger = TimeSpan.FromMilliseconds(1),
            MaxBackoff = TimeSpan.FromMilliseconds(200),
            OnRetry = _ => Interlocked.Increment(ref retries),
        });
        const int count = 600;
        var acks = new List<Task<ulong>>();
        using var cutting = new CancellationTokenSource();
        var cutter = Task.Run(async () =>
        {
            while (!cutting.IsCancellationRequested)
            {
                await Task.Delay(Random.Shared.Next(20, 80)); // random moments, not a synchronisation
                proxy.CutAll();
            }
        });
        for (var i = 0; i < count; i++) acks.Add(await producer.SendAsync(new Record { Value = ByteString.CopyFromUtf8($"r{i}") }));
        await producer.FlushAsync().WaitAsync(TimeSpan.FromSeconds(60));
        await cutting.CancelAsync();
        await cutter;
        output.WriteLine($"{proxy.Cuts} cuts, {producer.Calls} calls, {retries} retries, {Interlocked.Read(ref duplicates)} duplicates not appended");
        Assert.True(retries > 3, "the connection was cut under the producer");
        Assert.True(Interlocked.Read(ref duplicates) > 0, "no record was resent after it had been appended");
        var offsets = acks.Select(a => a.Result).ToList();
        Assert.Equal(Enumerable.Range(0, count).Select(i => (ulong)i), offsets);
        await AssertExactlyOnceAsync(new Protos.Log.V1.Log.LogClient(server.Channel), "cut", count);
    }

    /// <summary>The topic holds r0..r{count-1}, each once, in order, and nothing else.</summary>
    private static async Task AssertExactlyOnceAsync(Protos.Log.V1.Log.LogClient client, string topic, int count)
    {
        using var call = client.ConsumeStream(new ConsumeRequest { Topic = topic }, new CallOptions().WithTimeout(TimeSpan.FromSeconds(30)));
        for (var i = 0; i < count; i++)
        {
            Assert.True(await call.ResponseStream.MoveNext(), $"the log ends before r{i}");
            Assert.Equal($"r{i}", call.ResponseStream.Current.Record.Value.ToStringUtf8());
        }
        var end = await client.ConsumeAsync(new ConsumeRequest { Topic = topic, Offset = (ulong)count }, new CallOptions().WithTimeout(TimeSpan.FromSeconds(5))).ResponseAsync
            .ContinueWith(t => t.Exception?.InnerException as RpcException, TaskScheduler.Default);
        Assert.Equal(StatusCode.OutOfRange, end?.StatusCode);
    }

    private static ChildProcess Serve(string data) =>
        ChildProcess.Conduit("serve", "--urls", "http://127.0.0.1:0", "--data", data, "--log-durability", "always", "--log-level", "Warning");

    private static async Task<int> PortOf(ChildProcess server) =>
        new Uri((await server.WaitForLine(@"listening on (http://127\.0\.0\.1:\d+)", TimeSpan.FromSeconds(30))).Groups[1].Value).Port;

    [Fact]
    public async Task An_epoch_handed_out_is_durable_before_the_answer_so_a_sigkill_never_hands_it_out_again()
    {
        // Two instances of one producer ask before either writes, with a SIGKILL of the server in
        // between: they must not get the same epoch (the first one would not be fenced).
        using var data = new TempDir();
        var server = Serve(data.Path);
        try
        {
            var port = await PortOf(server);
            ulong id;
            using (var channel = ConduitChannel.ForAddress($"http://127.0.0.1:{port}"))
            {
                var client = new Protos.Log.V1.Log.LogClient(channel);
                var first = await client.InitProducerAsync(new InitProducerRequest { Topic = "t" }, Timeout());
                (id, var epoch) = (first.ProducerId, first.ProducerEpoch);
                Assert.Equal(0u, epoch);
                Assert.Equal(1u, (await client.InitProducerAsync(new InitProducerRequest { Topic = "t", ProducerId = id }, Timeout())).ProducerEpoch);
            }
            await server.DisposeAsync(); // SIGKILL
            server = Serve(data.Path);
            port = await PortOf(server);
            using (var channel = ConduitChannel.ForAddress($"http://127.0.0.1:{port}"))
            {
                var client = new Protos.Log.V1.Log.LogClient(channel);
                Assert.Equal(2u, (await client.InitProducerAsync(new InitProducerRequest { Topic = "t", ProducerId = id }, Timeout())).ProducerEpoch);
                var fenced = await Assert.ThrowsAsync<RpcException>(() => client.ProduceAsync(Request("old", id, 1, 0), Timeout()).ResponseAsync);
                Assert.Equal("PRODUCER_FENCED", fenced.GetDetail<ErrorInfo>()!.Reason);
                Assert.Equal(0ul, (await client.ProduceAsync(Request("new", id, 2, 0), Timeout())).Offset);
            }
        }
        finally
        {
            await server.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_record_stamped_past_the_servers_clock_by_more_than_the_tolerance_is_refused_so_it_cannot_expire_producers()
    {
        // Producer expiry is measured in record time (so every replica decides alike): a record
        // stamped a year ahead would make the topic forget every producer. Such a stamp is refused.
        await using var server = await LogServer.StartAsync();
        var init = await server.Log.InitProducerAsync(new InitProducerRequest { Topic = "t" }, Timeout());
        Assert.Equal(0ul, (await server.Log.ProduceAsync(Request("a", init.ProducerId, 0, 0), Timeout())).Offset);
        var now = DateTimeOffset.UtcNow;
        var ahead = now.AddDays(365).ToUnixTimeMilliseconds();
        var refused = await Assert.ThrowsAsync<RpcException>(() => server.Log.ProduceAsync(
            new ProduceRequest { Topic = "t", Record = new Record { Value = ByteString.CopyFromUtf8("future"), TimestampUnixMs = ahead } }, Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);
        Assert.Equal("TIMESTAMP_TOO_FAR_AHEAD", refused.GetDetail<ErrorInfo>()!.Reason);
        Assert.Equal("record.timestamp_unix_ms", refused.GetDetail<BadRequest>()!.FieldViolations[0].Field);
        var batch = new ProduceBatchRequest { Topic = "t" };
        batch.Records.Add(new Record { Value = ByteString.CopyFromUtf8("ok") });
        batch.Records.Add(new Record { Value = ByteString.CopyFromUtf8("future"), TimestampUnixMs = ahead });
        var batchRefused = await Assert.ThrowsAsync<RpcException>(() => server.Log.ProduceBatchAsync(batch, Timeout()).ResponseAsync);
        Assert.Equal("records[1].timestamp_unix_ms", batchRefused.GetDetail<BadRequest>()!.FieldViolations[0].Field);
        // Within the tolerance (and any time in the past) is the client's to choose.
        Assert.Equal(1ul, (await server.Log.ProduceAsync(new ProduceRequest { Topic = "t", Record = new Record { Value = ByteString.CopyFromUtf8("soon"), TimestampUnixMs = now.AddMinutes(30).ToUnixTimeMilliseconds() } }, Timeout())).Offset);
        Assert.Equal(2ul, (await server.Log.ProduceAsync(new ProduceRequest { Topic = "t", Record = new Record { Value = ByteString.CopyFromUtf8("old"), TimestampUnixMs = 1000 } }, Timeout())).Offset);
        // The producer is still known: its next sequence follows, no SEQUENCE_GAP.
        Assert.Equal(3ul, (await server.Log.ProduceAsync(Request("b", init.ProducerId, 0, 1), Timeout())).Offset);
    }

    [Fact]
    public async Task Each_record_is_in_the_log_exactly_once_in_order_across_sigkills_and_cut_connections()
    {
        using var data = new TempDir();
        await using var proxy = new CuttingProxy();
        var server = Serve(data.Path);
        try
        {
            proxy.BackendPort = await PortOf(server);
            using var channel = ConduitChannel.ForAddress(proxy.Address);
            await using var producer = await LogProducer.CreateAsync(new Protos.Log.V1.Log.LogClient(channel), "orders", new LogProducerOptions
            {
                MaxBatchRecords = 64,
                MaxBackoff = TimeSpan.FromMilliseconds(300),
            });
            // Records flow until the faults are over (at most 20 000), so every fault hits a call in flight.
            const int maxCount = 20_000;
            var acks = new List<Task<ulong>>(maxCount);
            var acknowledged = 0;
            using var faultsOver = new CancellationTokenSource();
            var sending = Task.Run(async () =>
            {
                for (var i = 0; i < maxCount && !faultsOver.IsCancellationRequested; i++)
                {
                    var ack = await producer.SendAsync(new Record { Value = ByteString.CopyFromUtf8($"r{i}") });
                    acks.Add(ack);
                    _ = ack.ContinueWith(_ => Interlocked.Increment(ref acknowledged), TaskScheduler.Default);
                }
            });
            var random = new Random();
            var kills = 0;
            var cuts = 0;
            var clock = Stopwatch.StartNew();
            // A fault once records flow again (a random number of new acknowledgements, then a random
            // moment): 6 kills, or 25 s.
            while (!sending.IsCompleted && kills < 6 && clock.Elapsed < TimeSpan.FromSeconds(25))
            {
                var until = Volatile.Read(ref acknowledged) + random.Next(20, 300);
                var waited = Stopwatch.StartNew();
                // Polled: the producer counts acknowledgements as they arrive; the kill only has to come after some more of them.
                while (Volatile.Read(ref acknowledged) < until && waited.Elapsed < TimeSpan.FromSeconds(15)) await Task.Delay(5);
                await Task.Delay(random.Next(0, 50));
                if (random.Next(3) == 0)
                {
                    proxy.CutAll();
                    cuts++;
                    continue;
                }
                proxy.BackendPort = 0;
                await server.DisposeAsync(); // SIGKILL
                proxy.CutAll();
                kills++;
                server = Serve(data.Path);
                proxy.BackendPort = await PortOf(server);
            }
            await faultsOver.CancelAsync();
            await sending.WaitAsync(TimeSpan.FromSeconds(30));
            await producer.FlushAsync().WaitAsync(TimeSpan.FromSeconds(30));
            var count = acks.Count;
            output.WriteLine($"{count} records, {kills} SIGKILLs, {cuts} cuts, {producer.Calls} calls, {clock.Elapsed.TotalSeconds:0.0} s");
            Assert.True(kills >= 3, $"only {kills} kills happened while producing");
            Assert.True(count >= 500, $"only {count} records were sent");
            Assert.Equal(Enumerable.Range(0, count).Select(i => (ulong)i), acks.Select(a => a.Result));

            // One more restart, then read everything back.
            proxy.BackendPort = 0;
            await server.DisposeAsync();
            server = Serve(data.Path);
            proxy.BackendPort = await PortOf(server);
            using var reader = ConduitChannel.ForAddress($"http://127.0.0.1:{proxy.BackendPort}");
            await AssertExactlyOnceAsync(new Protos.Log.V1.Log.LogClient(reader), "orders", count);
        }
        finally
        {
            await server.DisposeAsync();
        }
    }
}
