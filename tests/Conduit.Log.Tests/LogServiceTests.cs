using System.Diagnostics;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Record = Conduit.Protos.Log.V1.Record;

namespace Conduit.Log.Tests;

public class LogServiceTests
{
    private static ProduceRequest Produce(string value, string topic = "") =>
        new() { Topic = topic, Record = new Record { Value = ByteString.CopyFromUtf8(value) } };

    private static CallOptions Timeout(double seconds = 30) => new CallOptions().WithTimeout(TimeSpan.FromSeconds(seconds));

    [Fact]
    public async Task Produce_then_consume_returns_the_record_with_its_offset_key_headers_and_timestamp()
    {
        await using var server = await LogServer.StartAsync();
        var first = await server.Log.ProduceAsync(Produce("first"), Timeout());
        var record = new Record { Value = ByteString.CopyFromUtf8("second"), Key = ByteString.CopyFromUtf8("user-1"), TimestampUnixMs = 1_700_000_000_000 };
        record.Headers["trace"] = ByteString.CopyFrom(1, 2, 3);
        var second = await server.Log.ProduceAsync(new ProduceRequest { Record = record }, Timeout());
        Assert.Equal((0ul, 1ul), (first.Offset, second.Offset));

        var read = (await server.Log.ConsumeAsync(new ConsumeRequest { Offset = 1 }, Timeout())).Record;
        Assert.Equal(("second", 1ul, "user-1", 1_700_000_000_000L), (read.Value.ToStringUtf8(), read.Offset, read.Key.ToStringUtf8(), read.TimestampUnixMs));
        Assert.Equal(new byte[] { 1, 2, 3 }, read.Headers["trace"].ToByteArray());
        var firstRead = (await server.Log.ConsumeAsync(new ConsumeRequest { Offset = 0 }, Timeout())).Record;
        Assert.Equal("first", firstRead.Value.ToStringUtf8());
        Assert.InRange(firstRead.TimestampUnixMs, DateTimeOffset.UtcNow.AddMinutes(-5).ToUnixTimeMilliseconds(), DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
    }

    [Fact]
    public async Task Consume_past_the_end_is_out_of_range_with_error_info_and_a_message_naming_the_range()
    {
        await using var server = await LogServer.StartAsync();
        for (var i = 0; i < 3; i++) await server.Log.ProduceAsync(Produce($"r{i}"), Timeout());
        var ex = await Assert.ThrowsAsync<RpcException>(() => server.Log.ConsumeAsync(new ConsumeRequest { Offset = 7 }, Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.OutOfRange, ex.StatusCode);
        var info = ex.GetDetail<ErrorInfo>()!;
        Assert.Equal("OFFSET_PAST_END", info.Reason);
        Assert.Equal(("7", "0", "3", ""), (info.Metadata["offset"], info.Metadata["first_offset"], info.Metadata["next_offset"], info.Metadata["topic"]));
        var message = ex.GetDetail<LocalizedMessage>()!.Message;
        Assert.Contains("Offset 7 is past the end", message);
        Assert.Contains("offsets 0 to 2", message);

        var huge = await Assert.ThrowsAsync<RpcException>(() => server.Log.ConsumeAsync(new ConsumeRequest { Offset = ulong.MaxValue }, Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.OutOfRange, huge.StatusCode);
        Assert.Equal(ulong.MaxValue.ToString(), huge.GetDetail<ErrorInfo>()!.Metadata["offset"]);
    }

    [Fact]
    public async Task Consume_below_the_oldest_retained_record_is_out_of_range_saying_so()
    {
        await using var server = await LogServer.StartAsync();
        await server.Admin.CreateTopicAsync(new CreateTopicRequest { Name = "small", Settings = new TopicSettings { SegmentBytes = 1024 } }, Timeout());
        for (var i = 0; i < 60; i++) await server.Log.ProduceAsync(Produce(new string('x', 50), "small"), Timeout());

        var dry = await server.Admin.TruncateAsync(new TruncateRequest { Topic = "small", BeforeOffset = 30 }, new CallOptions(new Metadata { DryRun.Header }).WithTimeout(TimeSpan.FromSeconds(30)));
        Assert.True(dry.SegmentsRemoved > 0);
        Assert.Equal(0ul, dry.Topic.FirstOffset); // a dry run removes nothing
        var truncated = await server.Admin.TruncateAsync(new TruncateRequest { Topic = "small", BeforeOffset = 30 }, Timeout());
        Assert.Equal(dry.SegmentsRemoved, truncated.SegmentsRemoved);
        Assert.InRange(truncated.Topic.FirstOffset, 1ul, 30ul);

        var ex = await Assert.ThrowsAsync<RpcException>(() => server.Log.ConsumeAsync(new ConsumeRequest { Topic = "small", Offset = 0 }, Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.OutOfRange, ex.StatusCode);
        Assert.Equal("OFFSET_BEFORE_START", ex.GetDetail<ErrorInfo>()!.Reason);
        Assert.Contains("below the oldest retained record", ex.GetDetail<LocalizedMessage>()!.Message);
        var stream = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            using var call = server.Log.ConsumeStream(new ConsumeRequest { Topic = "small", Offset = 0 }, Timeout());
            await foreach (var _ in call.ResponseStream.ReadAllAsync()) { }
        });
        Assert.Equal(StatusCode.OutOfRange, stream.StatusCode);
        Assert.Equal(30ul, (await server.Log.ConsumeAsync(new ConsumeRequest { Topic = "small", Offset = 30 }, Timeout())).Record.Offset);
    }

    [Fact]
    public async Task A_record_whose_bytes_rot_on_disk_answers_data_loss_and_the_others_are_still_served()
    {
        await using var server = await LogServer.StartAsync();
        for (var i = 0; i < 5; i++) await server.Log.ProduceAsync(Produce($"record-{i}"), Timeout());
        var store = Directory.GetFiles(Path.Combine(server.DataDir, "log", "_default"), "*.store").Single();
        var bytes = File.ReadAllBytes(store);
        var at = bytes.AsSpan().IndexOf("record-2"u8);
        using (var f = new FileStream(store, FileMode.Open, FileAccess.Write, FileShare.ReadWrite))
        {
            f.Position = at + 7;
            f.WriteByte((byte)'X');
        }
        var ex = await Assert.ThrowsAsync<RpcException>(() => server.Log.ConsumeAsync(new ConsumeRequest { Offset = 2 }, Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.DataLoss, ex.StatusCode);
        Assert.Equal(("RECORD_CORRUPTED", "2"), (ex.GetDetail<ErrorInfo>()!.Reason, ex.GetDetail<ErrorInfo>()!.Metadata["offset"]));
        Assert.Contains("offset 3", ex.GetDetail<LocalizedMessage>()!.Message);
        Assert.Equal("record-3", (await server.Log.ConsumeAsync(new ConsumeRequest { Offset = 3 }, Timeout())).Record.Value.ToStringUtf8());
    }

    [Fact]
    public async Task A_consumer_waiting_at_the_end_receives_a_new_record_within_milliseconds()
    {
        await using var server = await LogServer.StartAsync();
        await server.Log.ProduceAsync(Produce("before"), Timeout());
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using var call = server.Log.ConsumeStream(new ConsumeRequest { Offset = 0 }, new CallOptions(cancellationToken: cts.Token));
        var stream = call.ResponseStream;
        Assert.True(await stream.MoveNext());
        Assert.Equal("before", stream.Current.Record.Value.ToStringUtf8()); // now the server waits at offset 1

        var latencies = new List<double>();
        for (var i = 0; i < 5; i++)
        {
            var next = stream.MoveNext();
            Assert.False(next.IsCompleted);
            var produced = await server.Log.ProduceAsync(Produce($"after-{i}"), Timeout());
            var acknowledged = Stopwatch.GetTimestamp();
            Assert.True(await next);
            latencies.Add(Stopwatch.GetElapsedTime(acknowledged).TotalMilliseconds);
            Assert.Equal((produced.Offset, $"after-{i}"), (stream.Current.Record.Offset, stream.Current.Record.Value.ToStringUtf8()));
        }
        // Woken by the append: delivery takes a network hop, not a polling period. A loose bound
        // for a shared 2-core machine; the median is typically well under a millisecond.
        latencies.Sort();
        Assert.True(latencies[2] < 50, $"median {latencies[2]:F2} ms after the acknowledgement ({string.Join(", ", latencies.Select(l => l.ToString("F2")))})");
        cts.Cancel();
    }

    [Fact]
    public async Task A_following_consume_stream_ends_unavailable_with_the_offset_to_resume_from_when_the_server_stops()
    {
        await using var server = await LogServer.StartAsync();
        await server.Log.ProduceAsync(Produce("only"), Timeout());
        using var call = server.Log.ConsumeStream(new ConsumeRequest { Offset = 0 }, Timeout());
        Assert.True(await call.ResponseStream.MoveNext());
        var waiting = call.ResponseStream.MoveNext(); // the server now waits at offset 1
        server.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
        var ex = await Assert.ThrowsAsync<RpcException>(() => waiting.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
        Assert.Contains("resume from offset 1", ex.Status.Detail);
        var info = ex.GetDetail<ErrorInfo>()!;
        Assert.Equal(("SERVER_STOPPING", "1"), (info.Reason, info.Metadata["next_offset"]));
        Assert.NotNull(ex.GetDetail<RetryInfo>());
    }

    [Fact]
    public async Task A_consume_stream_ends_at_its_deadline()
    {
        await using var server = await LogServer.StartAsync();
        await server.Log.ProduceAsync(Produce("only"), Timeout());
        using var call = server.Log.ConsumeStream(new ConsumeRequest { Offset = 0 }, new CallOptions().WithTimeout(TimeSpan.FromMilliseconds(500)));
        var received = new List<string>();
        var ex = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            await foreach (var r in call.ResponseStream.ReadAllAsync()) received.Add(r.Record.Value.ToStringUtf8());
        });
        Assert.Equal(StatusCode.DeadlineExceeded, ex.StatusCode);
        Assert.Equal(["only"], received);
    }

    [Fact]
    public async Task Concurrent_producers_get_distinct_dense_offsets()
    {
        await using var server = await LogServer.StartAsync();
        var offsets = await Task.WhenAll(Enumerable.Range(0, 8).Select(async p =>
        {
            var mine = new List<(ulong, string)>();
            for (var i = 0; i < 40; i++)
            {
                var value = $"p{p}-{i}";
                mine.Add(((await server.Log.ProduceAsync(Produce(value), Timeout())).Offset, value));
            }
            return mine;
        }));
        var all = offsets.SelectMany(o => o).ToList();
        Assert.Equal(Enumerable.Range(0, 320).Select(i => (ulong)i), all.Select(a => a.Item1).Order());
        foreach (var (offset, value) in all.Where((_, i) => i % 17 == 0))
        {
            Assert.Equal(value, (await server.Log.ConsumeAsync(new ConsumeRequest { Offset = offset }, Timeout())).Record.Value.ToStringUtf8());
        }
    }

    [Fact]
    public async Task Produce_stream_answers_every_request_in_order_and_consume_stream_reads_them_back()
    {
        await using var server = await LogServer.StartAsync();
        const int count = 2000;
        using (var call = server.Log.ProduceStream(Timeout(60)))
        {
            var sending = Task.Run(async () =>
            {
                for (var i = 0; i < count; i++) await call.RequestStream.WriteAsync(Produce($"v{i}", "stream"));
                await call.RequestStream.CompleteAsync();
            });
            var expected = 0ul;
            await foreach (var response in call.ResponseStream.ReadAllAsync()) Assert.Equal(expected++, response.Offset);
            await sending;
            Assert.Equal((ulong)count, expected);
        }
        using var consume = server.Log.ConsumeStream(new ConsumeRequest { Topic = "stream", Offset = 0 }, Timeout(60));
        var n = 0;
        await foreach (var response in consume.ResponseStream.ReadAllAsync())
        {
            Assert.Equal(($"v{n}", (ulong)n), (response.Record.Value.ToStringUtf8(), response.Record.Offset));
            if (++n == count) break;
        }
    }

    [Fact]
    public async Task A_produce_stream_can_carry_more_than_kestrels_default_request_body_limit()
    {
        await using var server = await LogServer.StartAsync();
        var value = ByteString.CopyFrom(new byte[64 * 1024]);
        const int count = 600; // about 39 MB in one request stream; Kestrel's default body limit is 30 MB
        using var call = server.Log.ProduceStream(Timeout(120));
        var sending = Task.Run(async () =>
        {
            for (var i = 0; i < count; i++) await call.RequestStream.WriteAsync(new ProduceRequest { Topic = "big", Record = new Record { Value = value } });
            await call.RequestStream.CompleteAsync();
        });
        var n = 0;
        await foreach (var _ in call.ResponseStream.ReadAllAsync()) n++;
        await sending;
        Assert.Equal(count, n);
    }

    [Fact]
    public async Task A_bad_request_in_a_produce_stream_ends_it_after_acknowledging_what_came_before()
    {
        await using var server = await LogServer.StartAsync();
        using var call = server.Log.ProduceStream(Timeout());
        await call.RequestStream.WriteAsync(Produce("good"));
        await call.RequestStream.WriteAsync(Produce("bad", "no/slashes"));
        var offsets = new List<ulong>();
        var ex = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            await foreach (var r in call.ResponseStream.ReadAllAsync()) offsets.Add(r.Offset);
        });
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Equal("topic", ex.GetDetail<BadRequest>()!.FieldViolations[0].Field);
        Assert.Equal([0ul], offsets);
    }

    [Fact]
    public async Task Dry_run_produce_validates_and_answers_the_would_be_offset_without_appending()
    {
        await using var server = await LogServer.StartAsync();
        await server.Log.ProduceAsync(Produce("real"), Timeout());
        var dry = await server.Log.ProduceAsync(Produce("not stored"), new CallOptions(new Metadata { DryRun.Header }).WithTimeout(TimeSpan.FromSeconds(30)));
        Assert.Equal(1ul, dry.Offset);
        var info = await server.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "" }, Timeout());
        Assert.Equal(1ul, info.NextOffset);
        var missing = await Assert.ThrowsAsync<RpcException>(() => server.Log.ProduceAsync(new ProduceRequest(), Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.InvalidArgument, missing.StatusCode);
    }

    [Fact]
    public async Task Topics_are_created_with_settings_listed_and_described()
    {
        await using var server = await LogServer.StartAsync(("Conduit:Log:Durability", "Interval"));
        var created = await server.Admin.CreateTopicAsync(new CreateTopicRequest
        {
            Name = "audit",
            Settings = new TopicSettings { Durability = Durability.Always, RetentionBytes = 1 << 20, RetentionMs = 86_400_000, SegmentBytes = 65536 },
        }, Timeout());
        Assert.Equal((Durability.Always, 1ul << 20, 86_400_000ul, 65536ul), (created.Settings.Durability, created.Settings.RetentionBytes, created.Settings.RetentionMs, created.Settings.SegmentBytes));
        await server.Log.ProduceAsync(Produce("a", "audit"), Timeout());
        await server.Log.ProduceAsync(Produce("b", "auto-created"), Timeout());

        var list = await server.Admin.ListTopicsAsync(new ListTopicsRequest(), Timeout());
        Assert.Equal(["", "audit", "auto-created"], list.Topics.Select(t => t.Name));
        Assert.Equal(Durability.Interval, list.Topics[2].Settings.Durability); // the server's default
        var audit = await server.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "audit" }, Timeout());
        Assert.Equal((0ul, 1ul, 1u), (audit.FirstOffset, audit.NextOffset, audit.Segments));
        Assert.True(audit.Bytes > 0);

        var exists = await Assert.ThrowsAsync<RpcException>(() => server.Admin.CreateTopicAsync(new CreateTopicRequest { Name = "audit" }, Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.AlreadyExists, exists.StatusCode);
        var invalid = await Assert.ThrowsAsync<RpcException>(() => server.Admin.CreateTopicAsync(new CreateTopicRequest { Name = "x", Settings = new TopicSettings { SegmentBytes = 1 } }, Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.InvalidArgument, invalid.StatusCode);
        Assert.Equal("settings", invalid.GetDetail<BadRequest>()!.FieldViolations[0].Field);
        var missing = await Assert.ThrowsAsync<RpcException>(() => server.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "nope" }, Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, missing.StatusCode);
        var consumeMissing = await Assert.ThrowsAsync<RpcException>(() => server.Log.ConsumeAsync(new ConsumeRequest { Topic = "nope" }, Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, consumeMissing.StatusCode);
        var dry = await server.Admin.CreateTopicAsync(new CreateTopicRequest { Name = "dry" }, new CallOptions(new Metadata { DryRun.Header }).WithTimeout(TimeSpan.FromSeconds(30)));
        Assert.Equal("dry", dry.Name);
        Assert.DoesNotContain("dry", (await server.Admin.ListTopicsAsync(new ListTopicsRequest(), Timeout())).Topics.Select(t => t.Name));
    }

    [Fact]
    public async Task Topics_beyond_the_configured_limit_are_refused_with_a_quota_failure()
    {
        await using var server = await LogServer.StartAsync(("Conduit:Log:MaxTopics", "3"));
        await server.Log.ProduceAsync(Produce("x", "a"), Timeout());
        await server.Admin.CreateTopicAsync(new CreateTopicRequest { Name = "b" }, Timeout());
        var produce = await Assert.ThrowsAsync<RpcException>(() => server.Log.ProduceAsync(Produce("x", "c"), Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.ResourceExhausted, produce.StatusCode);
        Assert.Equal("topics", produce.GetDetail<QuotaFailure>()!.Violations[0].Subject);
        var create = await Assert.ThrowsAsync<RpcException>(() => server.Admin.CreateTopicAsync(new CreateTopicRequest { Name = "c" }, Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.ResourceExhausted, create.StatusCode);
        Assert.Equal(1ul, (await server.Log.ProduceAsync(Produce("y", "a"), Timeout())).Offset); // existing topics go on
    }

    [Fact]
    public async Task Retention_keeps_a_topic_within_its_byte_limit()
    {
        await using var server = await LogServer.StartAsync();
        await server.Admin.CreateTopicAsync(new CreateTopicRequest { Name = "capped", Settings = new TopicSettings { SegmentBytes = 2048, RetentionBytes = 8192 } }, Timeout());
        using (var call = server.Log.ProduceStream(Timeout()))
        {
            for (var i = 0; i < 500; i++) await call.RequestStream.WriteAsync(Produce(new string('r', 100), "capped"));
            await call.RequestStream.CompleteAsync();
            await foreach (var _ in call.ResponseStream.ReadAllAsync()) { }
        }
        var info = await server.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "capped" }, Timeout());
        Assert.Equal(500ul, info.NextOffset);
        Assert.True(info.Bytes <= 8192 + 2048, $"{info.Bytes} bytes");
        Assert.True(info.FirstOffset > 0);
        var oldest = await server.Log.ConsumeAsync(new ConsumeRequest { Topic = "capped", Offset = info.FirstOffset }, Timeout());
        Assert.Equal(info.FirstOffset, oldest.Record.Offset);
    }
}
