using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Conduit.Storage.Log;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using static Conduit.Log.Tests.LogFiles;
using Record = Conduit.Protos.Log.V1.Record;
using TopicSettings = Conduit.Storage.Log.TopicSettings;

namespace Conduit.Log.Tests;

/// <summary>Batch produce: many records in one append (storage) and in one message (ProduceBatch).</summary>
public class BatchTests
{
    private static CallOptions Timeout(Metadata? headers = null) => new CallOptions(headers).WithTimeout(TimeSpan.FromSeconds(30));

    [Fact]
    public async Task Under_always_a_batch_is_announced_as_appended_in_the_response_headers_before_its_fsync_returns()
    {
        var files = new FaultyFileSystem();
        using var release = new ManualResetEventSlim(true);
        files.HoldStoreFsyncsWhileReset(release);
        await using var server = await LogServer.StartAsync(files, Conduit.Storage.Log.Durability.Always);
        var batch = new ProduceBatchRequest { Topic = "held" };
        batch.Records.Add(new Record { Value = ByteString.CopyFromUtf8("first") });
        Assert.Equal(0ul, (await server.Log.ProduceBatchAsync(batch, Timeout())).BaseOffset);

        batch.Records.Add(new Record { Value = ByteString.CopyFromUtf8("second") });
        release.Reset(); // from now on the store's fsync waits
        using var call = server.Log.ProduceBatchAsync(batch, Timeout());
        try
        {
            var headers = await call.ResponseHeadersAsync.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal("1", headers.GetValue(Conduit.Services.Log.LogService.AppendedHeader));
            Assert.False(call.ResponseAsync.IsCompleted); // appended, not durable: not acknowledged
        }
        finally
        {
            release.Set(); // a failing assertion must not leave the server's fsync held
        }
        var reply = await call.ResponseAsync;
        Assert.Equal(1ul, reply.BaseOffset);
        Assert.Equal(2u, reply.Count);
    }

    [Fact]
    public async Task Without_durability_always_no_early_headers_are_sent()
    {
        await using var server = await LogServer.StartAsync(("Conduit:Log:Durability", "Never"));
        var batch = new ProduceBatchRequest { Topic = "quick" };
        batch.Records.Add(new Record { Value = ByteString.CopyFromUtf8("v") });
        using var call = server.Log.ProduceBatchAsync(batch, Timeout());
        Assert.Null((await call.ResponseHeadersAsync).GetValue(Conduit.Services.Log.LogService.AppendedHeader));
        Assert.Equal(0ul, (await call.ResponseAsync).BaseOffset);
    }

    [Fact]
    public async Task A_batch_gets_dense_offsets_in_one_write_and_is_never_split_across_segments()
    {
        using var dir = new TempDir();
        var settings = new TopicSettings { SegmentBytes = 1024 };
        using (var storage = new FileLogStorage(dir.Path, settings))
        {
            var log = storage.GetOrCreate("");
            var first = log.AppendBatch([.. Enumerable.Range(0, 10).Select(i => Value($"a{i}"))]);
            await first.Durable;
            Assert.Equal(0, first.Offset);
            // Bigger than a segment: it goes whole into a new one.
            var big = log.AppendBatch([.. Enumerable.Range(0, 40).Select(i => Value($"b{i}" + new string('x', 40)))]);
            await big.Durable;
            Assert.Equal(10, big.Offset);
            Assert.Equal(2, log.Stats().Segments);
            Assert.Equal("a9", Text(log.Read(9)));
            Assert.StartsWith("b39", Text(log.Read(49)));
        }
        using (var storage = new FileLogStorage(dir.Path, settings))
        {
            var log = storage.GetOrCreate("");
            Assert.Equal(50, log.NextOffset);
            Assert.StartsWith("b0", Text(log.Read(10)));
        }
    }

    [Fact]
    public async Task A_full_disk_undoes_a_whole_batch()
    {
        using var dir = new TempDir();
        var files = new FaultyFileSystem();
        using var storage = new FileLogStorage(files, dir.Path);
        var log = storage.GetOrCreate("");
        await log.AppendAsync(Value("one"));
        files.FreeBytes = 200;
        Assert.Throws<DiskFullException>(() => log.AppendBatch([.. Enumerable.Range(0, 20).Select(i => Value($"r{i}"))]));
        files.FreeBytes = null;
        var after = log.AppendBatch([Value("x"), Value("y")]);
        await after.Durable;
        Assert.Equal(1, after.Offset);
        Assert.Equal("y", Text(log.Read(2)));
        Assert.Equal(3, log.NextOffset);
    }

    [Fact]
    public async Task ProduceBatch_answers_the_base_offset_and_the_records_read_back_in_order()
    {
        await using var server = await LogServer.StartAsync();
        var request = new ProduceBatchRequest { Topic = "batched" };
        for (var i = 0; i < 100; i++) request.Records.Add(new Record { Value = ByteString.CopyFromUtf8($"v{i}"), Key = ByteString.CopyFromUtf8("k") });
        var first = await server.Log.ProduceBatchAsync(request, Timeout());
        Assert.Equal((0ul, 100u), (first.BaseOffset, first.Count));
        var second = await server.Log.ProduceBatchAsync(request, Timeout());
        Assert.Equal(100ul, second.BaseOffset);
        var read = await server.Log.ConsumeAsync(new ConsumeRequest { Topic = "batched", Offset = 142 }, Timeout());
        Assert.Equal(("v42", "k"), (read.Record.Value.ToStringUtf8(), read.Record.Key.ToStringUtf8()));

        var dry = await server.Log.ProduceBatchAsync(request, Timeout(new Metadata { DryRun.Header }));
        Assert.Equal(200ul, dry.BaseOffset);
        Assert.Equal(200ul, (await server.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "batched" }, Timeout())).NextOffset);

        var empty = await Assert.ThrowsAsync<RpcException>(() => server.Log.ProduceBatchAsync(new ProduceBatchRequest(), Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.InvalidArgument, empty.StatusCode);
        var bad = new ProduceBatchRequest();
        bad.Records.Add(new Record());
        bad.Records.Add(new Record { TimestampUnixMs = -1 });
        var invalid = await Assert.ThrowsAsync<RpcException>(() => server.Log.ProduceBatchAsync(bad, Timeout()).ResponseAsync);
        Assert.Equal("records[1].timestamp_unix_ms", invalid.GetDetail<BadRequest>()!.FieldViolations[0].Field);
    }

    [Fact]
    public async Task ConsumeStream_sends_records_already_in_the_log_together_and_still_follows_the_tail()
    {
        await using var server = await LogServer.StartAsync();
        var request = new ProduceBatchRequest { Topic = "t" };
        for (var i = 0; i < 3000; i++) request.Records.Add(new Record { Value = ByteString.CopyFromUtf8($"v{i}") });
        await server.Log.ProduceBatchAsync(request, Timeout());
        using var call = server.Log.ConsumeStream(new ConsumeRequest { Topic = "t", Offset = 0 }, Timeout());
        var seen = 0;
        await foreach (var response in call.ResponseStream.ReadAllAsync())
        {
            Assert.Equal((ulong)seen, response.Record.Offset);
            if (++seen == 3000) break;
        }
        var tail = call.ResponseStream.MoveNext();
        await server.Log.ProduceAsync(new ProduceRequest { Topic = "t", Record = new Record { Value = ByteString.CopyFromUtf8("new") } }, Timeout());
        Assert.True(await tail.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal("new", call.ResponseStream.Current.Record.Value.ToStringUtf8());
    }
}
