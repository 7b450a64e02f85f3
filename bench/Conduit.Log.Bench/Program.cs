// Log service benchmarks. Not a test: run it, read the figures, copy them into docs/performance.md.
//
//   dotnet run -c Release --project bench/Conduit.Log.Bench -- [--dir /path/on/the/disk] [--seconds 5]
//
// In one process: the disk's own sequential write bandwidth and fsync latency (in --dir), then an
// in-process `conduit serve` (data in --dir) on 127.0.0.1:0 driven over h2c by our client:
// ProduceStream throughput for 100 B and 4 KiB records under `always` and `never`, the same with
// ProduceBatch (many records per message, 4 calls in flight, with batch latency), ConsumeStream
// throughput, and produce-to-consume latency through a tail-following ConsumeStream.
using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using Conduit.Grpc;
using Conduit.Hosting;
using Conduit.Protos.Log.V1;
using Conduit.Storage.Log;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Win32.SafeHandles;
using Durability = Conduit.Protos.Log.V1.Durability;
using TopicSettings = Conduit.Protos.Log.V1.TopicSettings;

var dir = Arg("--dir") ?? Path.Combine(Path.GetTempPath(), "conduit-log-bench");
var seconds = double.Parse(Arg("--seconds") ?? "5", CultureInfo.InvariantCulture);
if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
Directory.CreateDirectory(dir);
var culture = CultureInfo.InvariantCulture;
void Line(string text) => Console.WriteLine(text);

Line($"# Log benchmarks {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, .NET {Environment.Version}, dir {dir}");
Line("");

// ---- The disk itself -------------------------------------------------------------------------
var (diskMBps, fsyncP50, fsyncP99) = MeasureDisk(dir, seconds);
Line("| disk (same run, same folder) | figure |");
Line("|---|---|");
Line($"| sequential write, 1 MiB writes + fsync at the end | {diskMBps:F0} MB/s |");
Line($"| 4 KiB write + fsync, one after another | p50 {fsyncP50:F2} ms, p99 {fsyncP99:F2} ms ({1000 / fsyncP50:F0} fsyncs/s) |");
Line("");

// ---- The service -------------------------------------------------------------------------------
var options = new ServeOptions { Urls = ["http://127.0.0.1:0"], DataDir = Path.Combine(dir, "data") };
var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["Conduit:Log:RetentionCheckSeconds"] = "0" }).Build();
await using var app = ConduitHost.Build(options, configuration,
    services => ConduitHost.AddConduitServices(services, configuration, options), ConduitHost.MapConduitServices, Microsoft.Extensions.Logging.LogLevel.Warning);
await app.StartAsync();
using var channel = ConduitChannel.ForAddress(ConduitHost.Addresses(app)[0]);
var log = new Log.LogClient(channel);
var admin = new LogAdmin.LogAdminClient(channel);

var storage = app.Services.GetRequiredService<ILogStorage>();
Line("| ProduceStream, 1 stream, pipelined | records/s | MB/s | share of disk bandwidth | fsyncs (records per fsync) |");
Line("|---|---|---|---|---|");
var produced = new Dictionary<string, long>();
foreach (var size in new[] { 100, 4096 })
{
    foreach (var durability in new[] { Durability.Always, Durability.Never })
    {
        var topic = $"p{size}-{durability.ToString().ToLowerInvariant()}";
        await admin.CreateTopicAsync(new CreateTopicRequest { Name = topic, Settings = new TopicSettings { Durability = durability } });
        var (count, elapsed) = await ProduceFor(log, topic, size, seconds);
        produced[topic] = count;
        var rate = count / elapsed;
        var mbps = rate * size / 1e6;
        var issued = ((FileTopicLog)storage.Find(topic)!).FsyncCount;
        var fsyncs = durability == Durability.Always ? $"{issued / elapsed:F0}/s ({count / Math.Max(1, issued)})" : $"{issued}";
        Line($"| {size} B values, durability {durability.ToString().ToLowerInvariant()} | {rate:F0} | {mbps:F1} | {mbps / diskMBps:P1} | {fsyncs} |");
    }
}
Line("");

Line("| ProduceBatch (issue 16), 4 calls in flight | records/s | MB/s | share of disk bandwidth | records per fsync | batch latency p50 / p99 |");
Line("|---|---|---|---|---|---|");
foreach (var (size, perBatch, durability) in new[] { (100, 256, Durability.Always), (100, 256, Durability.Never), (4096, 32, Durability.Always), (4096, 32, Durability.Never) })
{
    var topic = $"b{size}-{durability.ToString().ToLowerInvariant()}";
    await admin.CreateTopicAsync(new CreateTopicRequest { Name = topic, Settings = new TopicSettings { Durability = durability } });
    var (count, elapsed, p50, p99) = await ProduceBatchFor(log, topic, size, perBatch, 4, seconds);
    var rate = count / elapsed;
    var mbps = rate * size / 1e6;
    var issued = ((FileTopicLog)storage.Find(topic)!).FsyncCount;
    var perFsync = durability == Durability.Always ? $"{count / Math.Max(1, issued)}" : "-";
    Line($"| {size} B values x {perBatch} per batch, durability {durability.ToString().ToLowerInvariant()} | {rate:F0} | {mbps:F1} | {mbps / diskMBps:P1} | {perFsync} | {p50:F2} / {p99:F2} ms |");
}
Line("");

Line("| LogProducer (client-side batching: 1 MiB batches, 5 ms linger, 1 call in flight), durability always | records/s | MB/s | share of disk bandwidth | records per fsync | record latency (send to ack) p50 / p99 |");
Line("|---|---|---|---|---|---|");
foreach (var size in new[] { 100, 4096 })
{
    var topic = $"producer{size}-always";
    await admin.CreateTopicAsync(new CreateTopicRequest { Name = topic, Settings = new TopicSettings { Durability = Durability.Always } });
    var (count, elapsed, p50, p99) = await ProducerFor(log, topic, size, seconds);
    var rate = count / elapsed;
    var mbps = rate * size / 1e6;
    var issued = ((FileTopicLog)storage.Find(topic)!).FsyncCount;
    Line($"| {size} B values | {rate:F0} | {mbps:F1} | {mbps / diskMBps:P1} | {count / Math.Max(1, issued)} | {p50:F2} / {p99:F2} ms |");
}
Line("");

Line("| ConsumeStream from offset 0, 1 stream | records/s | MB/s |");
Line("|---|---|---|");
foreach (var size in new[] { 100, 4096 })
{
    var topic = $"p{size}-never";
    var (count, elapsed) = await ConsumeAll(log, topic, produced[topic]);
    Line($"| {size} B values ({count} records) | {count / elapsed:F0} | {count / elapsed * size / 1e6:F1} |");
}
Line("");

Line("| produce-to-consume latency (Produce unary, one at a time; a ConsumeStream waiting at the tail) | p50 | p99 |");
Line("|---|---|---|");
foreach (var durability in new[] { Durability.Always, Durability.Never })
{
    var topic = $"latency-{durability.ToString().ToLowerInvariant()}";
    await admin.CreateTopicAsync(new CreateTopicRequest { Name = topic, Settings = new TopicSettings { Durability = durability } });
    var (p50, p99) = await Latency(log, topic, 2000);
    Line($"| 100 B values, durability {durability.ToString().ToLowerInvariant()} | {p50:F3} ms | {p99:F3} ms |");
}
await app.StopAsync();
Line("");
var (diskAfter, fsyncAfterP50, fsyncAfterP99) = MeasureDisk(dir, seconds);
Line($"Disk measured again after the service runs (the machine is shared): {diskAfter:F0} MB/s sequential; fsync p50 {fsyncAfterP50:F2} ms, p99 {fsyncAfterP99:F2} ms.");
Directory.Delete(dir, recursive: true);
return 0;

string? Arg(string name)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

static (double MBps, double P50, double P99) MeasureDisk(string dir, double seconds)
{
    var path = Path.Combine(dir, "disk-probe");
    var chunk = new byte[1 << 20];
    Random.Shared.NextBytes(chunk);
    long written = 0;
    var watch = Stopwatch.StartNew();
    using (var handle = File.OpenHandle(path, FileMode.Create, FileAccess.Write))
    {
        while (watch.Elapsed.TotalSeconds < seconds && written < (2L << 30))
        {
            RandomAccess.Write(handle, chunk, written);
            written += chunk.Length;
        }
        RandomAccess.FlushToDisk(handle);
    }
    var mbps = written / watch.Elapsed.TotalSeconds / 1e6;
    File.Delete(path);

    var latencies = new List<double>();
    var page = chunk.AsMemory(0, 4096);
    using (var handle = File.OpenHandle(path, FileMode.Create, FileAccess.Write))
    {
        long position = 0;
        var until = Stopwatch.StartNew();
        while (until.Elapsed.TotalSeconds < Math.Min(seconds, 3) || latencies.Count < 50)
        {
            var start = Stopwatch.GetTimestamp();
            RandomAccess.Write(handle, page.Span, position);
            RandomAccess.FlushToDisk(handle);
            latencies.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
            position += page.Length;
        }
    }
    File.Delete(path);
    latencies.Sort();
    return (mbps, Percentile(latencies, 0.50), Percentile(latencies, 0.99));
}

static double Percentile(List<double> sorted, double p) => sorted[Math.Min(sorted.Count - 1, (int)(sorted.Count * p))];

static async Task<(long Count, double Seconds)> ProduceFor(Log.LogClient log, string topic, int size, double seconds)
{
    var value = ByteString.CopyFrom(new byte[size]);
    using var call = log.ProduceStream();
    using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(seconds));
    var watch = Stopwatch.StartNew();
    var sending = Task.Run(async () =>
    {
        var request = new ProduceRequest { Topic = topic, Record = new Record { Value = value } };
        while (!stop.IsCancellationRequested) await call.RequestStream.WriteAsync(request);
        await call.RequestStream.CompleteAsync();
    });
    long count = 0;
    await foreach (var _ in call.ResponseStream.ReadAllAsync()) count++;
    await sending;
    return (count, watch.Elapsed.TotalSeconds);
}

static async Task<(long Count, double Seconds, double P50, double P99)> ProduceBatchFor(Log.LogClient log, string topic, int size, int perBatch, int inFlight, double seconds)
{
    var request = new ProduceBatchRequest { Topic = topic };
    var value = ByteString.CopyFrom(new byte[size]);
    for (var i = 0; i < perBatch; i++) request.Records.Add(new Record { Value = value });
    var latencies = new List<double>();
    long count = 0;
    var watch = Stopwatch.StartNew();
    await Task.WhenAll(Enumerable.Range(0, inFlight).Select(_ => Task.Run(async () =>
    {
        while (watch.Elapsed.TotalSeconds < seconds)
        {
            var start = Stopwatch.GetTimestamp();
            await log.ProduceBatchAsync(request);
            var took = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            lock (latencies)
            {
                latencies.Add(took);
                count += perBatch;
            }
        }
    })));
    var elapsed = watch.Elapsed.TotalSeconds;
    latencies.Sort();
    return (count, elapsed, Percentile(latencies, 0.50), Percentile(latencies, 0.99));
}

static async Task<(long Count, double Seconds, double P50, double P99)> ProducerFor(Log.LogClient log, string topic, int size, double seconds)
{
    var value = ByteString.CopyFrom(new byte[size]);
    var record = new Record { Value = value };
    var latencies = new List<double>();
    long count = 0;
    Task<ulong>? last = null;
    var watch = Stopwatch.StartNew();
    await using (var producer = new Conduit.Services.Log.LogProducer(log, topic))
    {
        for (long i = 0; watch.Elapsed.TotalSeconds < seconds; i++)
        {
            var start = Stopwatch.GetTimestamp();
            var ack = await producer.SendAsync(record);
            if (i % 16 == 0)
            {
                // Every 16th record's latency (a continuation per record would cost more than the record).
                _ = ack.ContinueWith(_ => { lock (latencies) latencies.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds); }, TaskScheduler.Default);
            }
            last = ack;
            count++;
        }
    } // disposing waits until every record sent is answered: the time counts until the last ack
    await last!; // batches are answered in order (1 in flight): the last one answered means all did
    var elapsed = watch.Elapsed.TotalSeconds;
    lock (latencies) latencies.Sort();
    return (count, elapsed, Percentile(latencies, 0.50), Percentile(latencies, 0.99));
}

static async Task<(long Count, double Seconds)> ConsumeAll(Log.LogClient log, string topic, long count)
{
    var watch = Stopwatch.StartNew();
    using var call = log.ConsumeStream(new ConsumeRequest { Topic = topic, Offset = 0 });
    long seen = 0;
    await foreach (var _ in call.ResponseStream.ReadAllAsync())
    {
        if (++seen == count) break;
    }
    return (seen, watch.Elapsed.TotalSeconds);
}

static async Task<(double P50, double P99)> Latency(Log.LogClient log, string topic, int count)
{
    using var cts = new CancellationTokenSource();
    using var call = log.ConsumeStream(new ConsumeRequest { Topic = topic, Offset = 0 }, new CallOptions(cancellationToken: cts.Token));
    var latencies = new List<double>(count);
    var consuming = Task.Run(async () =>
    {
        await foreach (var response in call.ResponseStream.ReadAllAsync())
        {
            var sent = BinaryPrimitives.ReadInt64LittleEndian(response.Record.Value.Span);
            latencies.Add(Stopwatch.GetElapsedTime(sent).TotalMilliseconds);
            if (latencies.Count == count) return;
        }
    });
    var value = new byte[100];
    for (var i = 0; i < count; i++)
    {
        BinaryPrimitives.WriteInt64LittleEndian(value, Stopwatch.GetTimestamp());
        await log.ProduceAsync(new ProduceRequest { Topic = topic, Record = new Record { Value = ByteString.CopyFrom(value) } });
    }
    await consuming;
    cts.Cancel();
    latencies.Sort();
    return (Percentile(latencies, 0.50), Percentile(latencies, 0.99));
}
