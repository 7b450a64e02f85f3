// Closed-loop load on cache.v1.Cache, the way redis-benchmark loads Redis: C callers, each
// sending its next request as soon as the previous answer arrives, over one channel (HTTP/2
// multiplexed), for a fixed time after a warm-up. Prints one markdown table row per operation.
//
//   dotnet bench/Conduit.Cache.Bench/bin/Release/net10.0/Conduit.Cache.Bench.dll \
//       --server http://127.0.0.1:50051 --concurrency 64 --seconds 5 [--label conduit] [--value-bytes 3]
using System.Diagnostics;
using System.Globalization;
using Conduit.Grpc;
using Conduit.Protos.Accounts.V1;
using Conduit.Protos.Cache.V1;
using Conduit.Services.Accounts;
using Google.Protobuf;
using Grpc.Core;

var server = Arg("--server", "http://127.0.0.1:50051");
var concurrency = int.Parse(Arg("--concurrency", "1"), CultureInfo.InvariantCulture);
var seconds = double.Parse(Arg("--seconds", "5"), CultureInfo.InvariantCulture);
var label = Arg("--label", "conduit");
var valueBytes = int.Parse(Arg("--value-bytes", "3"), CultureInfo.InvariantCulture);

using var channel = ConduitChannel.ForAddress(server);
var accounts = new Accounts.AccountsClient(channel);
var created = await accounts.CreateAccountAsync(new CreateAccountReq { Name = "bench", MaxCacheKeys = 1000, MaxValueBytes = Math.Max(valueBytes, 1024) },
    new CallOptions().WithTimeout(TimeSpan.FromSeconds(30)));
var options = new CallOptions(new Metadata { BearerToken.Entry(created.Token) });
var cache = new Cache.CacheClient(channel);
var value = ByteString.CopyFrom(new byte[valueBytes]);
await cache.StoreAsync(new StoreReq { Key = "key:__rand_int__", Val = value }, options);

await Run("Store", () => cache.StoreAsync(new StoreReq { Key = "key:__rand_int__", Val = value }, options).ResponseAsync);
await Run("Get", () => cache.GetAsync(new GetReq { Key = "key:__rand_int__" }, options).ResponseAsync);
return 0;

async Task Run(string operation, Func<Task> call)
{
    // Warm-up: JIT, connections, the token lookup cache.
    await Load(call, concurrency, TimeSpan.FromSeconds(1));
    var (count, elapsed, latencies) = await Load(call, concurrency, TimeSpan.FromSeconds(seconds));
    latencies.Sort();
    double Percentile(double p) => latencies.Count == 0 ? 0 : latencies[Math.Min(latencies.Count - 1, (int)Math.Ceiling(p * latencies.Count) - 1)] * 1000.0 / Stopwatch.Frequency;
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"| {label} | {operation} | {concurrency} | {count / elapsed.TotalSeconds:F0} | {Percentile(0.50):F3} | {Percentile(0.99):F3} |"));
}

static async Task<(long Count, TimeSpan Elapsed, List<long> Latencies)> Load(Func<Task> call, int callers, TimeSpan duration)
{
    var stop = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
    var started = Stopwatch.StartNew();
    var perCaller = await Task.WhenAll(Enumerable.Range(0, callers).Select(_ => Task.Run(async () =>
    {
        var samples = new List<long>(64 * 1024);
        while (true)
        {
            var t0 = Stopwatch.GetTimestamp();
            if (t0 >= stop) return samples;
            await call().ConfigureAwait(false);
            samples.Add(Stopwatch.GetTimestamp() - t0);
        }
    })));
    var elapsed = started.Elapsed;
    var all = perCaller.SelectMany(s => s).ToList();
    return (all.Count, elapsed, all);
}

string Arg(string name, string fallback)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
}
