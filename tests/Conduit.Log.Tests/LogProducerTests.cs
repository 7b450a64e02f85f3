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
}
