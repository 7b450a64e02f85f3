using System.Diagnostics;
using System.Diagnostics.Metrics;
using Grpc.Core;

namespace Conduit.Grpc;

/// <summary>
/// Per-call server metrics on the process-wide meter "Conduit.Grpc", recorded by
/// <see cref="LoggingInterceptor"/>. grpc-dotnet publishes only EventCounters (dotnet-counters,
/// no method or status), and ASP.NET Core's http.server.request.duration sees every gRPC call
/// as HTTP 200; this histogram has the method and the gRPC status, after OpenTelemetry's RPC
/// conventions (rpc.system, rpc.method, rpc.grpc.status_code). One Record per call, no allocation.
/// </summary>
public static class GrpcMetrics
{
    public const string MeterName = "Conduit.Grpc";

    private static readonly Meter Meter = new(MeterName);

    private static readonly Histogram<double> Duration = Meter.CreateHistogram(
        "rpc.server.call.duration", "s", "Duration of gRPC calls handled by this server, by method and status",
        tags: null,
        advice: new InstrumentAdvice<double>
        {
            HistogramBucketBoundaries = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
        });

    // Tag values are objects: the status codes boxed once, not per call.
    private static readonly object[] Codes = [.. Enumerable.Range(0, 17).Select(c => (object)c)];
    private static readonly object Grpc = "grpc";

    public static void Record(string method, StatusCode code, long startTimestamp)
    {
        if (!Duration.Enabled) return;
        var tags = new TagList
        {
            { "rpc.system", Grpc },
            { "rpc.method", method },
            { "rpc.grpc.status_code", (uint)code < (uint)Codes.Length ? Codes[(int)code] : (int)code },
        };
        Duration.Record(Stopwatch.GetElapsedTime(startTimestamp).TotalSeconds, tags);
    }
}
