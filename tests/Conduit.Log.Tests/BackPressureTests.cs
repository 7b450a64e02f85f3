using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Conduit.Storage.Log;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Record = Conduit.Protos.Log.V1.Record;
using TopicSettings = Conduit.Storage.Log.TopicSettings;

namespace Conduit.Log.Tests;

/// <summary>The real storage, counting how many records the service has read from it.</summary>
public sealed class CountingStorage(ILogStorage inner) : ILogStorage
{
    private long _reads;

    public long Reads => Interlocked.Read(ref _reads);

    public TopicSettings Defaults => inner.Defaults;
    public IReadOnlyList<ITopicLog> Topics => [.. inner.Topics.Select(Wrap)];
    public ITopicLog? Find(string name) => inner.Find(name) is { } t ? Wrap(t) : null;
    public ITopicLog GetOrCreate(string name) => Wrap(inner.GetOrCreate(name));
    public ITopicLog Create(string name, TopicConfig config) => Wrap(inner.Create(name, config));
    public void Dispose() => inner.Dispose();

    private Topic Wrap(ITopicLog log) => new(log, this);

    private sealed class Topic(ITopicLog log, CountingStorage owner) : ITopicLog
    {
        public string Name => log.Name;
        public TopicSettings Settings => log.Settings;
        public long FirstOffset => log.FirstOffset;
        public long NextOffset => log.NextOffset;
        public TopicStats Stats() => log.Stats();
        public PendingAppend Append(LogRecord record) => log.Append(record);
        public Task WaitForAsync(long offset, CancellationToken cancellationToken) => log.WaitForAsync(offset, cancellationToken);
        public int TruncateBefore(long offset, bool dryRun = false) => log.TruncateBefore(offset, dryRun);
        public int EnforceRetention() => log.EnforceRetention();

        public LogRecord Read(long offset)
        {
            Interlocked.Increment(ref owner._reads);
            return log.Read(offset);
        }
    }
}

public class BackPressureTests
{
    [Fact]
    public async Task A_consumer_that_stops_reading_stops_the_server_reading_the_log()
    {
        CountingStorage? counting = null;
        await using var server = await LogServer.StartAsync((services, data) => services.AddSingleton<ILogStorage>(_ =>
            counting = new CountingStorage(new FileLogStorage(Path.Combine(data, "log"), new TopicSettings { Durability = Conduit.Storage.Log.Durability.Never }))));
        const int count = 3000, size = 16 * 1024; // 48 MiB in the log
        using (var produce = server.Log.ProduceStream())
        {
            var value = ByteString.CopyFrom(new byte[size]);
            for (var i = 0; i < count; i++) await produce.RequestStream.WriteAsync(new ProduceRequest { Record = new Record { Value = value } });
            await produce.RequestStream.CompleteAsync();
            await foreach (var _ in produce.ResponseStream.ReadAllAsync()) { }
        }

        using var consume = server.Log.ConsumeStream(new ConsumeRequest { Offset = 0 }, new CallOptions().WithTimeout(TimeSpan.FromSeconds(60)));
        Assert.True(await consume.ResponseStream.MoveNext());
        // The client stops reading. Whatever the timing, the server can only have read what HTTP/2
        // flow control let through: the client's stream window (it grows only as the client
        // consumes) plus Kestrel's response buffer — about 6 records here — not the 48 MiB of the
        // log. An observation window, not a synchronisation: without back-pressure the server
        // reads all 3000 records in well under a second.
        await Task.Delay(1000);
        var readWhileStalled = counting!.Reads;
        Assert.True(readWhileStalled * size < 4L * 1024 * 1024, $"the server read {readWhileStalled} records ({readWhileStalled * size / 1024 / 1024} MiB) for a consumer that reads nothing");

        var received = 1;
        while (received < count && await consume.ResponseStream.MoveNext()) received++;
        Assert.Equal(count, received);
    }
}
