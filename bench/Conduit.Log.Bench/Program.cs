// Log service benchmarks. Not a test: run it, read the figures, copy them into docs/performance.md.
//
//   dotnet bench/Conduit.Log.Bench/bin/Release/net10.0/Conduit.Log.Bench.dll [--dir /path/on/the/disk] [--seconds 5]
//       [--rows disk,store,stream,batch,producer,consume,latency] [--sizes 100,4096] [--disk-runs 3] [--warmup 2]
//       [--in-flight 4] [--batch-bytes 131072] [--config Key=Value]
//
// In one process: the disk's own sequential write bandwidth and fsync latency (in --dir), the
// storage engine alone (no gRPC: the ceiling of any transport on this machine), then an
// in-process `conduit serve` (data in --dir) on 127.0.0.1:0 driven over h2c by our client:
// ProduceStream throughput for 100 B and 4 KiB records under `always` and `never`, the same with
// ProduceBatch (many records per message, 4 calls in flight, with batch latency), the LogProducer
// (client-side batching), ConsumeStream throughput, and produce-to-consume latency through a
// tail-following ConsumeStream. --rows and --sizes pick some of them (the disk row always runs).
// Before the measured rows, each produce workload picked runs --warmup seconds on a topic of its
// own, not measured: the figures are a running server's, not its first seconds' (JIT, tiering).
// --target URL drives a `conduit serve` of its own instead (say pinned to other cores than this
// client with taskset, as a client on another machine would be); --server-pid PID then reports
// the server's CPU apart from the client's. The store row and records per fsync need the
// in-process server.
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
using Durability = Conduit.Protos.Log.V1.Durability;
using TopicSettings = Conduit.Protos.Log.V1.TopicSettings;

if (args.Contains("--help") || args.Contains("-h"))
{
    Console.WriteLine("""
        Conduit.Log.Bench [--dir DIR] [--seconds S] [--rows LIST] [--sizes LIST] [--disk-runs N]
          --dir        folder on the disk to measure (emptied first and removed at the end)
          --seconds    length of each row (default 5)
          --rows       comma list of: disk, store, stream, batch, producer, consume, latency (default: all;
                       consume needs stream; the disk is always measured, before and after)
          --sizes      record value sizes in bytes, comma list (default 100,4096)
          --disk-runs  how many times each disk figure is measured; the median is reported (default 3)
          --config     Key=Value, repeatable: a setting of the in-process server (as in appsettings.json)
          --warmup     seconds each produce workload picked runs on a warm-up topic before the
                       measured rows, not measured (default 2; 0: none)
          --in-flight  ProduceBatch calls in flight (default 4)
          --connections  connections (channels) those calls are spread over (default 1)
          --batch-bytes  bytes of records per ProduceBatch call for values over 1 KiB (default 131072)
          --producer-in-flight  LogProducerOptions.MaxInFlight of the producer rows (default: the producer's)
          --target     URL of a running `conduit serve` to drive instead of the in-process server
                       (its data folder should be on the disk --dir is on; no store row)
          --server-pid that server's process id: its CPU per MB is reported apart from the client's
        """);
    return 0;
}
var dir = Arg("--dir") ?? Path.Combine(Path.GetTempPath(), "conduit-log-bench");
var seconds = double.Parse(Arg("--seconds") ?? "5", CultureInfo.InvariantCulture);
var rows = (Arg("--rows") ?? "disk,store,stream,batch,producer,consume,latency").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet();
var sizes = (Arg("--sizes") ?? "100,4096").Split(',').Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToArray();
var diskRuns = int.Parse(Arg("--disk-runs") ?? "3", CultureInfo.InvariantCulture);
var warmup = double.Parse(Arg("--warmup") ?? "2", CultureInfo.InvariantCulture);
var inFlight = int.Parse(Arg("--in-flight") ?? "4", CultureInfo.InvariantCulture);
var connections = int.Parse(Arg("--connections") ?? "1", CultureInfo.InvariantCulture);
var batchBytes = int.Parse(Arg("--batch-bytes") ?? "131072", CultureInfo.InvariantCulture);
int? producerInFlight = Arg("--producer-in-flight") is { } pif ? int.Parse(pif, CultureInfo.InvariantCulture) : null;
var target = Arg("--target");
Cpu.ServerPid = Arg("--server-pid") is { } pid ? int.Parse(pid, CultureInfo.InvariantCulture) : null;
int PerBatch(int size) => size <= 1024 ? 256 : Math.Max(1, batchBytes / size);
var settings = new Dictionary<string, string?> { ["Conduit:Log:RetentionCheckSeconds"] = "0" };
for (var i = 0; i < args.Length - 1; i++)
{
    // --config Key=Value, repeatable: a server setting, for A/B runs of one build (say Conduit:Connections:RepairAuthority=false).
    if (args[i] == "--config" && args[i + 1].Split('=', 2) is [var key, var setting]) settings[key] = setting;
}
if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
Directory.CreateDirectory(dir);
void Line(string text) => Console.WriteLine(text);

Line($"# Log benchmarks {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, .NET {Environment.Version}, dir {dir}, load average {LoadAverage()}{string.Concat(settings.Skip(1).Select(s => $", {s.Key}={s.Value}"))}");
Line("");

// ---- The disk itself -------------------------------------------------------------------------
// The denominator of "share of disk bandwidth" is the first row: what the log does under
// `always`, on the disk alone (appends to a new file, an fsync after each write of 1 MiB, the
// size of one LogProducer batch and so of one group commit), median of --disk-runs runs.
var disk = MeasureDisk(dir, seconds, diskRuns);
var diskMBps = disk.AppendFsync1M;
Line("| disk (same run, same folder; median of " + diskRuns + " runs, each run's figures in brackets) | figure |");
Line("|---|---|");
Line($"| **sequential append, 1 MiB writes, fsync after each, dropped from the page cache 64 MiB behind** (the log under `always`: the denominator below) | **{disk.AppendFsync1M:F0} MB/s** [{disk.Runs1M}] |");
Line($"| the same, every page kept in the page cache (new memory for each write) | {disk.Kept1M:F0} MB/s [{disk.RunsKept}] |");
Line($"| sequential append, 128 KiB writes, fsync after each, dropped 64 MiB behind (one ProduceBatch of 32 x 4 KiB) | {disk.AppendFsync128K:F0} MB/s [{disk.Runs128K}] |");
Line($"| sequential append, 1 MiB writes, one fsync at the end (up to 1 GiB: partly page cache speed) | {disk.FsyncAtEnd:F0} MB/s [{disk.RunsEnd}] |");
Line($"| 4 KiB write + fsync, one after another | p50 {disk.P50:F2} ms, p99 {disk.P99:F2} ms ({1000 / disk.P50:F0} fsyncs/s) |");
Line("");

// ---- The service -------------------------------------------------------------------------------
Microsoft.AspNetCore.Builder.WebApplication? app = null;
if (target is null)
{
    var options = new ServeOptions { Urls = ["http://127.0.0.1:0"], DataDir = Path.Combine(dir, "data") };
    var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings).Build();
    app = ConduitHost.Build(options, configuration,
        services => ConduitHost.AddConduitServices(services, configuration, options), ConduitHost.MapConduitServices, Microsoft.Extensions.Logging.LogLevel.Warning);
    await app.StartAsync();
}
else
{
    Line($"(driving the server at {target}{(Cpu.ServerPid is { } p ? $", process {p}: CPU per MB is the client's + the server's" : ": CPU per MB is this process's, the client's, only")}; --config does not reach it)");
    Line("");
}
var address = target ?? ConduitHost.Addresses(app!)[0];
using var channel = ConduitChannel.ForAddress(address);
var log = new Log.LogClient(channel);
// ProduceBatch's calls in flight spread over this many connections (--connections; default 1).
var extraChannels = Enumerable.Range(1, Math.Max(0, connections - 1)).Select(_ => ConduitChannel.ForAddress(address)).ToList();
var batchClients = new[] { log }.Concat(extraChannels.Select(c => new Log.LogClient(c))).ToArray();
var admin = new LogAdmin.LogAdminClient(channel);

var storage = app?.Services.GetRequiredService<ILogStorage>();
// The in-process server's count of a topic's fsyncs (none for a --target server), and records per fsync.
long? Fsyncs(string topic) => storage is null ? null : ((FileTopicLog)storage.Find(topic)!).FsyncCount;
string PerFsync(string topic, long count) => Fsyncs(topic) is { } issued ? $"{count / Math.Max(1, issued)}" : "-";
if (warmup > 0)
{
    // The same calls as the measured rows, on topics of their own, so the JIT has tiered up the
    // produce path (client and server) before anything is measured.
    var warmupWatch = Stopwatch.StartNew();
    foreach (var size in sizes)
    {
        var topic = $"warmup{size}";
        await admin.CreateTopicAsync(new CreateTopicRequest { Name = topic, Settings = new TopicSettings { Durability = Durability.Always } });
        if (rows.Contains("stream")) await ProduceFor(log, topic, size, warmup);
        if (rows.Contains("batch")) await ProduceBatchFor(batchClients, topic, size, PerBatch(size), inFlight, warmup);
        if (rows.Contains("producer"))
        {
            await ProducerFor(log, topic, size, warmup, idempotent: false, producerInFlight);
            await ProducerFor(log, topic, size, warmup, idempotent: true, producerInFlight);
        }
    }
    Line($"(warm-up, not measured: {warmupWatch.Elapsed.TotalSeconds:F0} s of the produce workloads picked, --warmup {warmup} s each; load average {LoadAverage()})");
    Line("");
}
var produced = new Dictionary<string, long>();
if (rows.Contains("stream"))
{
    Line("| ProduceStream, 1 stream, pipelined | records/s | MB/s | share of disk bandwidth | fsyncs (records per fsync) |");
    Line("|---|---|---|---|---|");
    foreach (var size in sizes)
    {
        foreach (var durability in new[] { Durability.Always, Durability.Never })
        {
            var topic = $"p{size}-{durability.ToString().ToLowerInvariant()}";
            await admin.CreateTopicAsync(new CreateTopicRequest { Name = topic, Settings = new TopicSettings { Durability = durability } });
            var (count, elapsed) = await ProduceFor(log, topic, size, seconds);
            produced[topic] = count;
            var rate = count / elapsed;
            var mbps = rate * size / 1e6;
            var fsyncs = Fsyncs(topic) is not { } issued ? "-" : durability == Durability.Always ? $"{issued / elapsed:F0}/s ({PerFsync(topic, count)})" : $"{issued}";
            Line($"| {size} B values, durability {durability.ToString().ToLowerInvariant()} | {rate:F0} | {mbps:F1} | {mbps / diskMBps:P1} | {fsyncs} |");
        }
    }
    Line("");
}

if (rows.Contains("store") && storage is null)
{
    Line("(no store row: it needs the in-process server)");
    Line("");
}
else if (rows.Contains("store"))
{
    // The storage engine alone, no gRPC: 1 MiB batches appended one after the other by one
    // caller, the next ones written while the previous one's fsync runs (as the pipelined producer
    // does). The ceiling of what any transport could reach on this machine. `always` only: the
    // `never` rows of ProduceStream and ProduceBatch show what skipping the fsync gives.
    Line("| the store alone (AppendBatch, no gRPC), 1 MiB batches, 4 in flight | records/s | MB/s | share of disk bandwidth | records per fsync | CPU ms per MB |");
    Line("|---|---|---|---|---|---|");
    foreach (var size in sizes)
    {
        var topic = $"s{size}-always";
        await admin.CreateTopicAsync(new CreateTopicRequest { Name = topic, Settings = new TopicSettings { Durability = Durability.Always } });
        var store = storage!.Find(topic)!;
        var records = Enumerable.Range(0, Math.Max(1, (1 << 20) / size)).Select(_ => new LogRecord { Value = new byte[size] }).ToArray();
        var cpu = Cpu.Start();
        var inFlightAppends = new Queue<Task>();
        long count = 0;
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed.TotalSeconds < seconds)
        {
            inFlightAppends.Enqueue(store.AppendBatch(records).Durable);
            count += records.Length;
            if (inFlightAppends.Count >= 4) await inFlightAppends.Dequeue();
        }
        await Task.WhenAll(inFlightAppends);
        var elapsed = watch.Elapsed.TotalSeconds;
        var mbps = count / elapsed * size / 1e6;
        Line($"| {size} B values, durability always | {count / elapsed:F0} | {mbps:F1} | {mbps / diskMBps:P1} | {PerFsync(topic, count)} | {cpu.Per(count * (double)size / 1e6)} |");
    }
    Line("");
}

if (rows.Contains("batch"))
{
    Line($"| ProduceBatch (issue 16), {inFlight} calls in flight over {connections} connection(s) | records/s | MB/s | share of disk bandwidth | records per fsync | batch latency p50 / p99 | CPU ms / thread-pool work items per MB (client + server) |");
    Line("|---|---|---|---|---|---|---|");
    foreach (var size in sizes)
    {
        var perBatch = PerBatch(size);
        foreach (var durability in new[] { Durability.Always, Durability.Never })
        {
            var topic = $"b{size}-{durability.ToString().ToLowerInvariant()}";
            await admin.CreateTopicAsync(new CreateTopicRequest { Name = topic, Settings = new TopicSettings { Durability = durability } });
            var cpu = Cpu.Start();
            var (count, elapsed, p50, p99) = await ProduceBatchFor(batchClients, topic, size, perBatch, inFlight, seconds);
            var cpuPerMB = cpu.Per(count * (double)size / 1e6);
            var rate = count / elapsed;
            var mbps = rate * size / 1e6;
            var perFsync = durability == Durability.Always ? PerFsync(topic, count) : "-";
            Line($"| {size} B values x {perBatch} per batch, durability {durability.ToString().ToLowerInvariant()} | {rate:F0} | {mbps:F1} | {mbps / diskMBps:P1} | {perFsync} | {p50:F2} / {p99:F2} ms | {cpuPerMB} |");
        }
    }
    Line("");
}

if (rows.Contains("producer"))
{
    Line("| LogProducer (client-side batching: 1 MiB batches, 5 ms linger, " + (producerInFlight is { } n ? $"{n} batches" : $"1 (plain) and {Conduit.Services.Log.LogProducerOptions.DefaultIdempotentInFlight} (idempotent) batches") + " in flight until written), durability always | records/s | MB/s | share of disk bandwidth | records per fsync | record latency (send to ack) p50 / p99 | CPU ms / thread-pool work items per MB (client + server) |");
    Line("|---|---|---|---|---|---|---|");
    foreach (var size in sizes)
    {
        foreach (var idempotent in new[] { false, true })
        {
            var topic = $"producer{size}-always-{(idempotent ? "idempotent" : "plain")}";
            await admin.CreateTopicAsync(new CreateTopicRequest { Name = topic, Settings = new TopicSettings { Durability = Durability.Always } });
            var cpu = Cpu.Start();
            var (count, elapsed, p50, p99) = await ProducerFor(log, topic, size, seconds, idempotent, producerInFlight);
            var cpuPerMB = cpu.Per(count * (double)size / 1e6);
            var rate = count / elapsed;
            var mbps = rate * size / 1e6;
            Line($"| {size} B values, {(idempotent ? "idempotent (the default)" : "plain (Idempotent = false)")} | {rate:F0} | {mbps:F1} | {mbps / diskMBps:P1} | {PerFsync(topic, count)} | {p50:F2} / {p99:F2} ms | {cpuPerMB} |");
        }
    }
    Line("");
}

if (rows.Contains("consume") && produced.Count > 0)
{
    Line("| ConsumeStream from offset 0, 1 stream | records/s | MB/s |");
    Line("|---|---|---|");
    foreach (var size in sizes)
    {
        var topic = $"p{size}-never";
        var (count, elapsed) = await ConsumeAll(log, topic, produced[topic]);
        Line($"| {size} B values ({count} records) | {count / elapsed:F0} | {count / elapsed * size / 1e6:F1} |");
    }
    Line("");
}

if (rows.Contains("latency"))
{
    Line("| produce-to-consume latency (Produce unary, one at a time; a ConsumeStream waiting at the tail) | p50 | p99 |");
    Line("|---|---|---|");
    foreach (var durability in new[] { Durability.Always, Durability.Never })
    {
        var topic = $"latency-{durability.ToString().ToLowerInvariant()}";
        await admin.CreateTopicAsync(new CreateTopicRequest { Name = topic, Settings = new TopicSettings { Durability = durability } });
        var (p50, p99) = await Latency(log, topic, 2000);
        Line($"| 100 B values, durability {durability.ToString().ToLowerInvariant()} | {p50:F3} ms | {p99:F3} ms |");
    }
    Line("");
}
foreach (var extra in extraChannels) extra.Dispose();
if (app is not null)
{
    await app.StopAsync();
    await app.DisposeAsync(); // closes the topics (their clean-shutdown checkpoints) before the folder goes
}
var after = MeasureDisk(dir, seconds, diskRuns);
Line($"Disk measured again after the service ran (the machine is shared; load average {LoadAverage()}): 1 MiB appends with an fsync each {after.AppendFsync1M:F0} MB/s [{after.Runs1M}]; 4 KiB write + fsync p50 {after.P50:F2} ms, p99 {after.P99:F2} ms.");
Directory.Delete(dir, recursive: true);
return 0;

string? Arg(string name)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";

// Sequential appends to a new file (as a segment grows), `block` bytes per write, an fsync after
// each write when fsyncEach (as group commit does under `always`), else one at the end. The clock
// stops after the last fsync returns; at most `limit` bytes, so a fast disk ends early.
// With dropBehind, each fsynced block further than that behind the end is dropped from the page
// cache, as the log does (docs/log.md, "The page cache"): the best this disk does for the log.
static double Append(string path, byte[] chunk, int block, bool fsyncEach, double seconds, long limit, long dropBehind = 0)
{
    long written = 0;
    var watch = Stopwatch.StartNew();
    using (var handle = File.OpenHandle(path, FileMode.Create, FileAccess.Write))
    {
        while (watch.Elapsed.TotalSeconds < seconds && written < limit)
        {
            RandomAccess.Write(handle, chunk.AsSpan(0, block), written);
            written += block;
            if (fsyncEach) RandomAccess.FlushToDisk(handle);
            if (fsyncEach && dropBehind > 0 && written - block >= dropBehind) FileSystem.DropFromCache(handle, written - block - dropBehind, block);
        }
        RandomAccess.FlushToDisk(handle);
    }
    var mbps = written / watch.Elapsed.TotalSeconds / 1e6;
    File.Delete(path);
    return mbps;
}

static DiskFigures MeasureDisk(string dir, double seconds, int runs)
{
    var path = Path.Combine(dir, "disk-probe");
    var chunk = new byte[1 << 20];
    Random.Shared.NextBytes(chunk); // not zeros: a compressing or deduplicating layer would flatter them
    var perRun = Math.Max(0.5, seconds / 2);
    List<double> m1 = [], kept = [], m128 = [], end = [];
    for (var run = 0; run < runs; run++)
    {
        // Interleaved, so a change in the machine's load hits every kind alike.
        m1.Add(Append(path, chunk, 1 << 20, fsyncEach: true, perRun, 1L << 30, dropBehind: 64L << 20));
        kept.Add(Append(path, chunk, 1 << 20, fsyncEach: true, perRun, 1L << 30));
        m128.Add(Append(path, chunk, 128 << 10, fsyncEach: true, perRun, 1L << 30, dropBehind: 64L << 20));
        end.Add(Append(path, chunk, 1 << 20, fsyncEach: false, perRun, 1L << 30));
    }

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
    static string Each(List<double> xs) => string.Join(", ", xs.Select(x => x.ToString("F0", CultureInfo.InvariantCulture)));
    return new DiskFigures(Median(m1), Each(m1), Median(kept), Each(kept), Median(m128), Each(m128), Median(end), Each(end), Percentile(latencies, 0.50), Percentile(latencies, 0.99));
}

static double Median(List<double> values)
{
    var sorted = values.Order().ToList();
    return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
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

static async Task<(long Count, double Seconds, double P50, double P99)> ProduceBatchFor(Log.LogClient[] clients, string topic, int size, int perBatch, int inFlight, double seconds)
{
    var request = new ProduceBatchRequest { Topic = topic };
    var value = ByteString.CopyFrom(new byte[size]);
    for (var i = 0; i < perBatch; i++) request.Records.Add(new Record { Value = value });
    var latencies = new List<double>();
    long count = 0;
    var watch = Stopwatch.StartNew();
    await Task.WhenAll(Enumerable.Range(0, inFlight).Select(i => Task.Run(async () =>
    {
        var log = clients[i % clients.Length];
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

static async Task<(long Count, double Seconds, double P50, double P99)> ProducerFor(Log.LogClient log, string topic, int size, double seconds, bool idempotent, int? inFlight)
{
    var value = ByteString.CopyFrom(new byte[size]);
    var record = new Record { Value = value };
    var latencies = new List<double>();
    long count = 0;
    Task<ulong>? last = null;
    var watch = Stopwatch.StartNew();
    await using (var producer = new Conduit.Services.Log.LogProducer(log, topic, new Conduit.Services.Log.LogProducerOptions { Idempotent = idempotent, MaxInFlight = inFlight }))
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
    await last!; // disposing waited for every batch: this only surfaces the last one's error
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

/// <summary>
/// The process's CPU time (user + system, every thread: client, server and the kernel's work for
/// them) over a row: per MB it is the cost of the path, which a busy machine disturbs far less than
/// the throughput; so are the thread-pool work items (hops between threads) per MB. With
/// --server-pid, this process is the client only, and the server's CPU per MB follows.
/// </summary>
internal readonly record struct Cpu(TimeSpan At, long WorkItems, TimeSpan ServerAt)
{
    public static int? ServerPid { get; set; }

    public static Cpu Start() => new(Process.GetCurrentProcess().TotalProcessorTime, ThreadPool.CompletedWorkItemCount, ServerCpu() ?? TimeSpan.Zero);

    /// <summary>The server's CPU time so far; null when there is no such process (any more).</summary>
    private static TimeSpan? ServerCpu()
    {
        if (ServerPid is not { } pid) return TimeSpan.Zero;
        try
        {
            using var server = Process.GetProcessById(pid);
            return server.TotalProcessorTime;
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>"CPU ms per MB / thread-pool work items per MB" since the start (with a server pid: "client ms + server ms / the client's work items").</summary>
    public string Per(double mb)
    {
        mb = Math.Max(mb, 1e-9);
        var client = (Process.GetCurrentProcess().TotalProcessorTime - At).TotalMilliseconds / mb;
        var workItems = (ThreadPool.CompletedWorkItemCount - WorkItems) / mb;
        return ServerPid is null
            ? string.Create(CultureInfo.InvariantCulture, $"{client:F2} / {workItems:F0}")
            : ServerCpu() is { } server
                ? string.Create(CultureInfo.InvariantCulture, $"client {client:F2} + server {(server - ServerAt).TotalMilliseconds / mb:F2} / {workItems:F0}")
                : string.Create(CultureInfo.InvariantCulture, $"client {client:F2} + server ? (process {ServerPid} gone) / {workItems:F0}");
    }
}

internal sealed record DiskFigures(double AppendFsync1M, string Runs1M, double Kept1M, string RunsKept, double AppendFsync128K, string Runs128K, double FsyncAtEnd, string RunsEnd, double P50, double P99);
