// The floor under the gRPC client's per-call allocations: a unary SayHello done with nothing but
// SocketsHttpHandler (HttpRequestMessage, ByteArrayContent, te/content-type headers, read the body
// to its end, check grpc-status in the trailers), driven like `conduit bench` drives its client (-c
// connections, --concurrency loops, a warm-up, then a measured window). What this allocates per
// call is SocketsHttpHandler's and HttpRequestMessage's; what `conduit bench` allocates on top is
// grpc-dotnet's GrpcChannel (Grpc.Net.Client: its call object, metadata, serialization context)
// and the load generator's. The question it answers: how much of the client's per-call cost is
// HTTP/2 itself and how much is the gRPC layer over it (bench/client-path.sh runs both).
//
//   dotnet bench/Conduit.ClientFloor/bin/Release/net10.0/Conduit.ClientFloor.dll \
//       --server http://127.0.0.1:PORT [-c 4] [--concurrency 32] [-d 10] [--warmup 2] [--cts]
//
// --cts gives every request its own CancellationTokenSource, as any client whose calls can be
// cancelled or disposed while running needs.
using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using Conduit.Protos.HelloWorld;
using Google.Protobuf;

var server = Arg("--server") ?? throw new ArgumentException("--server http://127.0.0.1:PORT is required");
var connections = int.Parse(Arg("-c") ?? "4");
var concurrency = int.Parse(Arg("--concurrency") ?? "32");
var seconds = double.Parse(Arg("-d") ?? "10", System.Globalization.CultureInfo.InvariantCulture);
var warmup = double.Parse(Arg("--warmup") ?? "2", System.Globalization.CultureInfo.InvariantCulture);
var withCts = args.Contains("--cts");

var payload = new HelloRequest { Name = "bench" }.ToByteArray();
var frame = new byte[5 + payload.Length];
BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), (uint)payload.Length);
payload.CopyTo(frame, 5);
var uri = new Uri(server.TrimEnd('/') + "/helloworld.Greeter/SayHello");
var invokers = Enumerable.Range(0, connections).Select(_ => new HttpMessageInvoker(new SocketsHttpHandler
{
    EnableMultipleHttp2Connections = false,
    UseProxy = false,
    UseCookies = false,
    AllowAutoRedirect = false,
    AutomaticDecompression = DecompressionMethods.None,
})).ToArray();

var start = Stopwatch.GetTimestamp();
var measureFrom = start + (long)(warmup * Stopwatch.Frequency);
var stopAt = measureFrom + (long)(seconds * Stopwatch.Frequency);
long measured = 0, errors = 0;
long? allocatedAtWindow = null;
var loops = Enumerable.Range(0, concurrency).Select(i => Task.Run(() => LoopAsync(invokers[i % invokers.Length]))).ToArray();
// The warm-up is wall-clock time by definition: sleeping through it is the measurement, not a
// wait for an event; the loops themselves count only calls that end after measureFrom.
await Task.Delay(TimeSpan.FromSeconds(warmup));
allocatedAtWindow = GC.GetTotalAllocatedBytes(precise: true);
await Task.WhenAll(loops);
var allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedAtWindow.Value;
Console.WriteLine($"bare SocketsHttpHandler{(withCts ? " + a CancellationTokenSource per call" : "")}: {measured} calls in {seconds:0.##} s, {measured / seconds:0.0} calls/s, {errors} errors, {allocated / Math.Max(1, measured)} bytes per call");
return errors == 0 && measured > 0 ? 0 : 1;

async Task LoopAsync(HttpMessageInvoker invoker)
{
    var buffer = new byte[4096];
    while (true)
    {
        var now = Stopwatch.GetTimestamp();
        if (now >= stopAt) return;
        using var cts = withCts ? new CancellationTokenSource() : null;
        using var request = new HttpRequestMessage(HttpMethod.Post, uri)
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(frame),
        };
        request.Headers.TryAddWithoutValidation("te", "trailers");
        request.Content.Headers.TryAddWithoutValidation("content-type", "application/grpc");
        using var response = await invoker.SendAsync(request, cts?.Token ?? default);
        var stream = response.Content.ReadAsStream();
        var filled = 0;
        int read;
        while ((read = await stream.ReadAsync(buffer.AsMemory(filled))) > 0) filled += read;
        var ok = filled >= 5 && response.TrailingHeaders.NonValidated.TryGetValues("grpc-status", out var status) && status.ToString() == "0";
        if (ok) HelloReply.Parser.ParseFrom(buffer.AsSpan(5, filled - 5));
        if (now >= measureFrom)
        {
            if (ok) Interlocked.Increment(ref measured);
            else Interlocked.Increment(ref errors);
        }
    }
}

string? Arg(string name)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}
