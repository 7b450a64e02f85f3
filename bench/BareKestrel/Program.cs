// Bare Kestrel answering /helloworld.Greeter/SayHello with a canned gRPC reply: reads the request
// body to its end, writes one pre-built frame (HelloReply{message="Hello bench"}), sets
// grpc-status 0 as a trailer. Whatever a gRPC layer on Kestrel costs is measured against this.
// The same for the two streaming shapes bench/compare-streaming.sh measures, with canned 10-byte
// responses (StreamingOutputCallResponse{payload{body=10 zero bytes}}):
//   /grpc.testing.TestService/StreamingOutputCall  reads the request, writes 100 responses, each
//                                                   flushed as a gRPC server flushes a stream write
//   /grpc.testing.TestService/FullDuplexCall       one response per whole request frame received,
//                                                   flushed once per read
//   dotnet run -c Release --project bench/BareKestrel -- --port 50090
using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Server.Kestrel.Core;

var port = args.Length >= 2 && args[0] == "--port" ? int.Parse(args[1]) : 50090;
var builder = WebApplication.CreateSlimBuilder(args);
builder.Logging.ClearProviders();
builder.WebHost.ConfigureKestrel(k =>
{
    k.AddServerHeader = false;
    k.Listen(System.Net.IPAddress.Loopback, port, o => o.Protocols = HttpProtocols.Http2);
});
var app = builder.Build();

// 0x0a 0x0b "Hello bench": field 1 (message), length 11.
byte[] reply = [0, 0, 0, 0, 13, 0x0a, 11, .. "Hello bench"u8];
long calls = 0;
app.MapPost("/helloworld.Greeter/SayHello", async (HttpContext http) =>
{
    await DrainAsync(http.Request.BodyReader);
    http.Response.ContentType = "application/grpc";
    await http.Response.BodyWriter.WriteAsync(reply);
    http.Response.AppendTrailer("grpc-status", "0");
    Interlocked.Increment(ref calls);
});

// Payload{body=10 zero bytes} = 0x12 0x0a + 10 bytes; the response: field 1 (payload), length 12.
byte[] streamReply = [0, 0, 0, 0, 14, 0x0a, 12, 0x12, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
app.MapPost("/grpc.testing.TestService/StreamingOutputCall", async (HttpContext http) =>
{
    await DrainAsync(http.Request.BodyReader);
    http.Response.ContentType = "application/grpc";
    for (var i = 0; i < 100; i++) await http.Response.BodyWriter.WriteAsync(streamReply);
    http.Response.AppendTrailer("grpc-status", "0");
    Interlocked.Increment(ref calls);
});
app.MapPost("/grpc.testing.TestService/FullDuplexCall", async (HttpContext http) =>
{
    http.Response.ContentType = "application/grpc";
    await http.Response.StartAsync();
    var reader = http.Request.BodyReader;
    var writer = http.Response.BodyWriter;
    var header = new byte[5];
    while (true)
    {
        var result = await reader.ReadAsync();
        var buffer = result.Buffer;
        var replies = 0;
        // Whole frames only: a 5-byte header (flag, big-endian length) and its message.
        while (buffer.Length >= 5)
        {
            buffer.Slice(0, 5).CopyTo(header);
            var length = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(1));
            if (buffer.Length < 5 + length) break;
            buffer = buffer.Slice(5 + length);
            writer.Write(streamReply);
            replies++;
        }
        reader.AdvanceTo(buffer.Start, result.Buffer.End);
        if (replies > 0) await writer.FlushAsync();
        if (result.IsCompleted) break;
    }
    http.Response.AppendTrailer("grpc-status", "0");
    Interlocked.Increment(ref calls);
});

// Reads a request body to its end.
static async Task DrainAsync(PipeReader reader)
{
    while (true)
    {
        var result = await reader.ReadAsync();
        reader.AdvanceTo(result.Buffer.End);
        if (result.IsCompleted) break;
    }
}

var allocatedAtStart = GC.GetTotalAllocatedBytes();
await app.StartAsync();
Console.WriteLine($"bare kestrel listening on http://127.0.0.1:{port}");
await app.WaitForShutdownAsync();
var allocated = GC.GetTotalAllocatedBytes() - allocatedAtStart;
Console.WriteLine($"bare kestrel: stopped after {calls} calls; allocated {allocated / (1024.0 * 1024):0.0} MiB ({(calls > 0 ? allocated / calls : 0)} bytes per call); GC gen0/gen1/gen2 {GC.CollectionCount(0)}/{GC.CollectionCount(1)}/{GC.CollectionCount(2)}");
