using System.Collections.Concurrent;
using System.Net;
using System.Text;
using Conduit.Protos.HelloWorld;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Observability.Tests;

/// <summary>OTLP export to a collector: here a stand-in that keeps what it is sent over OTLP/HTTP.</summary>
public class OtlpTests
{
    [Theory]
    [InlineData("http/protobuf", "/v1/traces", "/v1/metrics", "application/x-protobuf")]
    [InlineData("grpc", "/opentelemetry.proto.collector.trace.v1.TraceService/Export", "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", "application/grpc")]
    public async Task With_an_otlp_endpoint_spans_and_metrics_reach_the_collector(string protocol, string tracesPath, string metricsPath, string contentType)
    {
        var received = new ConcurrentQueue<(string Path, string ContentType, byte[] Body)>();
        var grpc = protocol == "grpc";
        var builder = WebApplication.CreateSlimBuilder();
        // OTLP/gRPC comes over h2c (prior knowledge), OTLP/HTTP over HTTP/1.1.
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.Protocols = grpc ? HttpProtocols.Http2 : HttpProtocols.Http1AndHttp2));
        await using var collector = builder.Build();
        collector.Run(async http =>
        {
            using var body = new MemoryStream();
            await http.Request.Body.CopyToAsync(body);
            received.Enqueue((http.Request.Path, http.Request.ContentType ?? "", body.ToArray()));
            if (grpc)
            {
                // An empty Export*ServiceResponse: one uncompressed message of 0 bytes, status OK.
                http.Response.ContentType = "application/grpc";
                http.Response.AppendTrailer("grpc-status", "0");
                await http.Response.Body.WriteAsync(new byte[5]);
            }
        });
        await collector.StartAsync();
        var endpoint = collector.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();

        var server = await ObservedServer.StartAsync(new Dictionary<string, string?>
        {
            ["Conduit:Telemetry:OtlpEndpoint"] = endpoint,
            ["Conduit:Telemetry:OtlpProtocol"] = protocol,
        });
        await new Greeter.GreeterClient(server.Channel).SayHelloAsync(new HelloRequest { Name = "otlp" }, new CallOptions().WithTimeout(TimeSpan.FromSeconds(30)));
        // Stopping the server flushes what its exporters still hold.
        await server.DisposeAsync();

        var traces = received.Where(r => r.Path == tracesPath).ToList();
        Assert.NotEmpty(traces);
        Assert.All(traces, t => Assert.Equal(contentType, t.ContentType));
        Assert.Contains(traces, t => Encoding.UTF8.GetString(t.Body).Contains("/helloworld.Greeter/SayHello", StringComparison.Ordinal));
        var metrics = received.Where(r => r.Path == metricsPath).ToList();
        Assert.Contains(metrics, m => Encoding.UTF8.GetString(m.Body).Contains("rpc.server.call.duration", StringComparison.Ordinal));
    }
}
