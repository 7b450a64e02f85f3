using Conduit.Grpc;
using Conduit.Services.Cache;
using Conduit.Services.Chat;
using Conduit.Storage.Log;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace Conduit.Hosting;

/// <summary>
/// Metrics, traces and the console log of `conduit serve` (docs/operations.md, "Metrics, traces
/// and logs"). The storage and services count with System.Diagnostics.Metrics and trace with
/// ActivitySource, both part of the runtime; OpenTelemetry is configured here, in the host only.
/// <list type="bullet">
/// <item>Metrics (on by default): the stack's meters and Conduit's own, served at /metrics in
/// Prometheus text format, and pushed over OTLP when an endpoint is set.</item>
/// <item>Traces (off by default): ASP.NET Core makes its per-request Activity only when something
/// listens, so a server without tracing pays nothing for it. With tracing on (Tracing, or an OTLP
/// endpoint) every request has a server span, outgoing gRPC calls a client span and W3C
/// traceparent, sampled parent-based at SampleRatio for new traces.</item>
/// </list>
/// </summary>
public static class TelemetryHosting
{
    /// <summary>Conduit's own meters.</summary>
    public static readonly IReadOnlyList<string> ConduitMeters =
        [GrpcMetrics.MeterName, LogMetrics.MeterName, CacheMetrics.MeterName, ChatMetrics.MeterName, GrpcEventCounters.MeterName];

    /// <summary>
    /// The stack's meters: Kestrel (connections, TLS handshakes, HTTP/2 streams queued),
    /// System.Net.Http (the calls this server makes, e.g. the cache to Accounts), the runtime (GC,
    /// thread pool, memory).
    /// </summary>
    public static readonly IReadOnlyList<string> StackMeters = ["Microsoft.AspNetCore.Server.Kestrel", "System.Net.Http", "System.Runtime"];

    /// <summary>
    /// ASP.NET Core hosting's per-request meter (http.server.request.duration per route), only with
    /// <see cref="TelemetryOptions.HttpMetrics"/>: measured, it took a fifth of a small unary call's
    /// throughput, and Conduit's own rpc.server.call.duration already counts every call by method
    /// and gRPC status.
    /// </summary>
    public const string HostingMeter = "Microsoft.AspNetCore.Hosting";

    /// <summary>Span sources besides ASP.NET Core's: Conduit's, the gRPC client's and HttpClient's.</summary>
    public static readonly IReadOnlyList<string> TraceSources = [CacheMetrics.MeterName, "Grpc.Net.Client", "System.Net.Http"];

    /// <summary>The console log: one line of text per entry, or one JSON object per line (Conduit:Logging:Format).</summary>
    public static void AddConsole(ILoggingBuilder logging, IConfiguration configuration)
    {
        var options = configuration.GetSection(LoggingOptions.Section).Get<LoggingOptions>() ?? new LoggingOptions();
        switch (options.Format.ToLowerInvariant())
        {
            case "json":
                logging.AddJsonConsole(o =>
                {
                    o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
                    o.UseUtcTimestamp = true;
                });
                break;
            case "simple":
                logging.AddSimpleConsole(o =>
                {
                    o.SingleLine = true;
                    o.TimestampFormat = "HH:mm:ss.fff ";
                });
                break;
            default:
                throw new ArgumentException($"{LoggingOptions.Section}:Format is '{options.Format}': use simple or json.");
        }
    }

    public static void AddTelemetry(IServiceCollection services, IConfiguration configuration)
    {
        var options = configuration.GetSection(TelemetryOptions.Section).Get<TelemetryOptions>() ?? new TelemetryOptions();
        if (options.SampleRatio is < 0 or > 1) throw new ArgumentException($"{TelemetryOptions.Section}:SampleRatio is {options.SampleRatio}: give a number from 0 to 1.");
        services.AddSingleton(options);
        if (!options.Metrics && !options.TracingEnabled) return;
        var otel = services.AddOpenTelemetry().ConfigureResource(r => r.AddService(options.ServiceName));
        if (options.Metrics)
        {
            otel.WithMetrics(metrics =>
            {
                metrics.AddMeter([.. ConduitMeters, .. StackMeters]);
                if (options.HttpMetrics) metrics.AddMeter(HostingMeter);
                // A scrape sees the counts of that moment (the exporter's default caches for 300 ms).
                metrics.AddPrometheusExporter(o => o.ScrapeResponseCacheDurationMilliseconds = 0);
                if (options.OtlpEndpoint is { Length: > 0 }) metrics.AddOtlpExporter(o => Otlp(o, options, "metrics"));
            });
        }
        if (options.TracingEnabled)
        {
            otel.WithTracing(tracing =>
            {
                tracing.SetSampler(new ParentBasedSampler(options.SampleRatio >= 1 ? new AlwaysOnSampler() : new TraceIdRatioBasedSampler(options.SampleRatio)));
                tracing.AddAspNetCoreInstrumentation();
                tracing.AddSource([.. TraceSources]);
                if (options.OtlpEndpoint is { Length: > 0 }) tracing.AddOtlpExporter(o => Otlp(o, options, "traces"));
            });
        }
    }

    /// <summary>What a policy file names to allow the metrics scrape: <c>allow cert:prometheus conduit/metrics</c>.</summary>
    public const string MetricsPermission = "conduit/metrics";

    /// <summary>Serves /metrics (Prometheus text format) when metrics are on.</summary>
    public static void Map(WebApplication app)
    {
        var options = app.Services.GetService<TelemetryOptions>();
        if (options is not { Metrics: true }) return;
        // With a permission policy, the scrape is a permission like any method ("conduit/metrics"):
        // its labels name topics and methods the policy may withhold from a caller.
        if (app.Services.GetService<Security.PermissionPolicy>() is { } policy)
        {
            app.UseWhen(http => http.Request.Path.Equals(options.MetricsPath, StringComparison.Ordinal), branch => branch.Use(async (http, next) =>
            {
                if (policy.Allows(http.User, MetricsPermission, null))
                {
                    await next(http).ConfigureAwait(false);
                    return;
                }
                http.Response.StatusCode = http.User.Identity?.IsAuthenticated == true ? StatusCodes.Status403Forbidden : StatusCodes.Status401Unauthorized;
            }));
        }
        app.MapPrometheusScrapingEndpoint(options.MetricsPath);
        GrpcEventCounters.Start();
    }

    private static void Otlp(OtlpExporterOptions otlp, TelemetryOptions options, string signal)
    {
        var endpoint = options.OtlpEndpoint!.TrimEnd('/');
        switch (options.OtlpProtocol.ToLowerInvariant())
        {
            case "grpc":
                otlp.Protocol = OtlpExportProtocol.Grpc;
                otlp.Endpoint = new Uri(endpoint);
                break;
            case "http/protobuf":
                // Set in code, the endpoint is used as it is: the signal's path goes on it here.
                otlp.Protocol = OtlpExportProtocol.HttpProtobuf;
                otlp.Endpoint = new Uri($"{endpoint}/v1/{signal}");
                break;
            default:
                throw new ArgumentException($"{TelemetryOptions.Section}:OtlpProtocol is '{options.OtlpProtocol}': use grpc or http/protobuf.");
        }
    }
}
