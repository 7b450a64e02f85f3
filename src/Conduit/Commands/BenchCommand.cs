using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Conduit.Commands.Bench;
using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace Conduit.Commands;

/// <summary>`conduit bench`: a load generator in the spirit of ghz for any method compiled into conduit.</summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var method = new Argument<string>("method") { Description = "package.Service/Method, e.g. helloworld.Greeter/SayHello" };
        var server = Cli.ServerOption();
        var connections = new Option<int>("-c", "--connections") { Description = "HTTP/2 connections", DefaultValueFactory = _ => 1 };
        var concurrency = new Option<int>("--concurrency") { Description = "Calls in flight (spread over the connections)", DefaultValueFactory = _ => 1 };
        var total = new Option<long?>("-n", "--total") { Description = "Measured calls to make (after the warm-up)" };
        var duration = new Option<string?>("-d", "--duration") { Description = "How long to measure: 10s, 500ms, 1m (default 10s unless -n)" };
        var rps = new Option<double?>("--rps") { Description = "Open loop: start calls on a fixed schedule of N per second over all loops, latency counted from when each call was due (default: closed loop, each loop's next call when the previous answered)" };
        var warmup = new Option<string>("--warmup") { Description = "Unmeasured warm-up before measuring", DefaultValueFactory = _ => "1s" };
        var data = new Option<string>("--data") { Description = "Request message as protobuf JSON", DefaultValueFactory = _ => "{}" };
        var payload = new Option<int?>("--payload") { Description = "Fill the request's first string/bytes field with this many bytes" };
        var streamMessages = new Option<int>("--stream-messages") { Description = "Messages per client-streaming call", DefaultValueFactory = _ => 10 };
        var json = new Option<bool>("--json") { Description = "Print the result as JSON" };
        var command = new Command("bench", "Load-test a method: throughput, latency percentiles, errors by status")
        {
            method, server, connections, concurrency, total, duration, rps, warmup, data, payload, streamMessages, json,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var descriptor = KnownServices.Find(parse.GetValue(method)!);
            if (descriptor is null)
            {
                Console.Error.WriteLine($"error: unknown method '{parse.GetValue(method)}'. Known:\n  " + string.Join("\n  ", KnownServices.All()));
                return 2;
            }
            IMessage request;
            try
            {
                request = JsonParser.Default.Parse(parse.GetValue(data)!, descriptor.InputType);
            }
            catch (InvalidProtocolBufferException ex)
            {
                Console.Error.WriteLine($"error: --data is not a valid {descriptor.InputType.FullName}: {ex.Message}");
                return 2;
            }
            if (parse.GetValue(payload) is { } size) Fill(request, size);
            if (parse.GetValue(rps) is { } target && !(target > 0 && double.IsFinite(target)))
            {
                Console.Error.WriteLine($"error: --rps must be a positive number of calls per second, not {target}.");
                return 2;
            }
            var measure = parse.GetValue(duration) is { } d ? ParseDuration(d) : parse.GetValue(total) is null ? TimeSpan.FromSeconds(10) : (TimeSpan?)null;
            var settings = new BenchSettings(parse.GetValue(server)!, descriptor, request,
                Math.Max(1, parse.GetValue(connections)), Math.Max(1, parse.GetValue(concurrency)),
                parse.GetValue(total), measure, parse.GetValue(rps), ParseDuration(parse.GetValue(warmup)!), parse.GetValue(streamMessages))
            { Tls = ClientIdentity.Tls(parse), Token = parse.GetValue(ClientIdentity.Token) };
            // Progress on stderr when it is a terminal; nothing in a pipe (Progress).
            using var progress = new Progress("bench");
            // CONDUIT_ALLOC_TRACE=1: bytes per call and the sampled types; =bytes: bytes per call
            // only, without the sampler's own allocations (its event payloads) in the figure.
            var trace = Environment.GetEnvironmentVariable("CONDUIT_ALLOC_TRACE");
            using var sampler = trace == "1" ? new Hosting.AllocationSampler() : null;
            var generator = new LoadGenerator(settings)
            {
                // The per-type tally covers the measured calls only, like the bytes per call.
                OnMeasureStart = sampler is null ? null : sampler.Reset,
                OnProgress = progress.Enabled ? p => { progress.Report(p.Ok, "call", $" ok, {Cli.Count(p.Errors, "error")}"); return Task.CompletedTask; } : null,
            };
            var allocatedAtStart = GC.GetTotalAllocatedBytes();
            var result = await generator.RunAsync(cancellationToken);
            if (trace is "1" or "bytes")
            {
                // The client side's cost, as `conduit serve` reports the server's.
                var calls = Math.Max(1, result.Ok + result.Errors.Values.Sum());
                var window = generator.AllocatedInWindow is { } w ? $"{w / calls} bytes per measured call after the warm-up, " : "";
                Console.Error.WriteLine($"client allocated {window}{(GC.GetTotalAllocatedBytes() - allocatedAtStart) / calls} bytes per measured call counting start-up and warm-up; GC gen0/gen1/gen2 {GC.CollectionCount(0)}/{GC.CollectionCount(1)}/{GC.CollectionCount(2)}");
                sampler?.Print(generator.AllocatedInWindow is null ? null : calls, top: 40);
            }
            progress.Done();
            Console.WriteLine(parse.GetValue(json) ? ToJson(settings, result) : ToText(settings, result));
            return result.Ok > 0 ? 0 : 1;
        });
        return command;
    }

    internal static TimeSpan ParseDuration(string text)
    {
        text = text.Trim();
        var (number, unit) = text.EndsWith("ms", StringComparison.Ordinal) ? (text[..^2], 0.001)
            : text.EndsWith('s') ? (text[..^1], 1.0)
            : text.EndsWith('m') ? (text[..^1], 60.0)
            : (text, 1.0);
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || value < 0)
        {
            throw new FormatException($"'{text}' is not a duration like 10s, 500ms or 1m.");
        }
        return TimeSpan.FromSeconds(value * unit);
    }

    private static void Fill(IMessage message, int size)
    {
        var field = message.Descriptor.Fields.InFieldNumberOrder().FirstOrDefault(f => f.FieldType is FieldType.String or FieldType.Bytes && !f.IsRepeated);
        if (field is null) throw new ArgumentException($"{message.Descriptor.FullName} has no string or bytes field for --payload.");
        field.Accessor.SetValue(message, field.FieldType == FieldType.String ? new string('x', size) : ByteString.CopyFrom(new byte[size]));
    }

    private static string Kind(MethodDescriptor m) => (m.IsClientStreaming, m.IsServerStreaming) switch
    {
        (false, false) => "unary",
        (true, false) => "client-streaming",
        (false, true) => "server-streaming",
        _ => "bidi ping-pong",
    };

    private static string ToText(BenchSettings s, BenchResult r)
    {
        var seconds = Math.Max(r.Elapsed.TotalSeconds, 1e-9);
        var lines = new List<string>
        {
            $"{s.Method.Service.FullName}/{s.Method.Name} ({Kind(s.Method)}) at {s.Server}: {Cli.Count(s.Connections, "connection")} x {s.Concurrency} in flight, measured {r.Elapsed.TotalSeconds:0.00} s after {s.Warmup.TotalSeconds:0.##} s warm-up",
            s.Rps is { } rps
                ? $"  schedule   open loop, {rps:0.##} calls/s due; latency counts from when each call was due"
                : "  schedule   closed loop: each loop's next call when the previous answered; latency from each call's start",
            $"  calls      {r.Ok} ok, {r.Errors.Values.Sum()} errors, {r.Ok / seconds:0.0} calls/s" + (r.Messages != r.Ok ? $", {r.Messages / seconds:0.0} messages/s" : ""),
            $"  latency    p50 {r.Percentile(50):0.000} ms   p90 {r.Percentile(90):0.000} ms   p99 {r.Percentile(99):0.000} ms   p99.9 {r.Percentile(99.9):0.000} ms   max {r.Percentile(100):0.000} ms",
        };
        lines.Add("  errors     " + (r.Errors.Count == 0 ? "none" : string.Join(", ", r.Errors.Select(e => $"{e.Key}: {e.Value}"))));
        if (r.Latencies.TotalCount > 0)
        {
            lines.Add("  histogram");
            lines.AddRange(Histogram(r));
        }
        return string.Join('\n', lines);
    }

    private static IEnumerable<string> Histogram(BenchResult r)
    {
        // Ten buckets, log-spaced between the fastest and the slowest call, counted from the HdrHistogram.
        var recorded = r.Latencies.RecordedValues().Select(v => (Ms: BenchResult.TicksToMs(v.ValueIteratedTo), Count: v.CountAddedInThisIterationStep)).ToList();
        var min = Math.Max(recorded[0].Ms, 0.001);
        var max = Math.Max(recorded[^1].Ms, min * 1.0001);
        var counts = new long[10];
        foreach (var (ms, count) in recorded)
        {
            var bucket = (int)(Math.Log(Math.Max(ms, min) / min) / Math.Log(max / min) * 10);
            counts[Math.Clamp(bucket, 0, 9)] += count;
        }
        var peak = counts.Max();
        for (var i = 0; i < 10; i++)
        {
            var upper = min * Math.Pow(max / min, (i + 1) / 10.0);
            yield return $"    <= {upper,10:0.000} ms {counts[i],10}  {new string('#', (int)(40.0 * counts[i] / Math.Max(1, peak)))}";
        }
    }

    private static string ToJson(BenchSettings s, BenchResult r)
    {
        var seconds = Math.Max(r.Elapsed.TotalSeconds, 1e-9);
        var node = new JsonObject
        {
            ["method"] = $"{s.Method.Service.FullName}/{s.Method.Name}",
            ["kind"] = Kind(s.Method),
            ["server"] = s.Server,
            ["connections"] = s.Connections,
            ["concurrency"] = s.Concurrency,
            ["rps"] = s.Rps,
            ["measured_s"] = r.Elapsed.TotalSeconds,
            ["ok"] = r.Ok,
            ["errors"] = new JsonObject(r.Errors.Select(e => KeyValuePair.Create(e.Key.ToString(), (JsonNode?)e.Value))),
            ["calls_per_s"] = r.Ok / seconds,
            ["messages_per_s"] = r.Messages / seconds,
            ["latency_ms"] = new JsonObject
            {
                ["p50"] = Latency(r, 50),
                ["p90"] = Latency(r, 90),
                ["p99"] = Latency(r, 99),
                ["p99_9"] = Latency(r, 99.9),
                ["max"] = Latency(r, 100),
            },
        };
        return node.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>A latency percentile in ms; null (JSON has no NaN) when no call was answered.</summary>
    private static JsonNode? Latency(BenchResult r, double percentile) => r.Percentile(percentile) is var ms && double.IsFinite(ms) ? JsonValue.Create(ms) : null;
}
