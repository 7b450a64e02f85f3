using System.Threading.Channels;
using Conduit.Protos.Log.V1;
using Conduit.Services.Log;
using Google.Protobuf;
using Grpc.Core;
using Record = Conduit.Protos.Log.V1.Record;

namespace Conduit.Log.Tests;

/// <summary>The client-side batcher: records sent one by one travel in ProduceBatch calls by size and linger time.</summary>
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

        await using var bad = new LogProducer(server.Log, "no/such name", new LogProducerOptions { Linger = TimeSpan.FromMilliseconds(20) });
        var first = await bad.SendAsync(Value("a"));
        var second = await bad.SendAsync(Value("b"));
        Assert.Equal(StatusCode.InvalidArgument, (await Assert.ThrowsAsync<RpcException>(() => first)).StatusCode);
        Assert.Equal(StatusCode.InvalidArgument, (await Assert.ThrowsAsync<RpcException>(() => second)).StatusCode);
    }

    [Fact]
    public async Task The_next_batch_is_sent_once_the_previous_one_is_appended_not_once_it_is_durable_and_order_is_kept()
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
        await using var producer = new LogProducer(server.Log, "pipelined", new LogProducerOptions { MaxBatchBytes = 1000, Linger = TimeSpan.FromSeconds(30) });
        var first = await producer.SendAsync(Value("first"));
        await producer.FlushAsync();
        Assert.Equal(0ul, await first.WaitAsync(TimeSpan.FromSeconds(30)));

        var acks = new List<Task<ulong>>();
        release.Reset(); // from now on the store's fsync waits
        try
        {
            for (var i = 0; i < 27; i++) acks.Add(await producer.SendAsync(Value($"record-{i:D3}-" + new string('v', 80))));
            // Two batches reach the store while the first one's fsync is held: the second was sent
            // once the first was appended (one call at a time still, so in order).
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
}
