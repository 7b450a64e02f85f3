namespace Conduit.Hosting;

/// <summary>
/// Metrics and traces of <c>conduit serve</c>, bound from "Conduit:Telemetry"
/// (docs/operations.md, "Metrics, traces and logs").
/// </summary>
public sealed class TelemetryOptions
{
    public const string Section = "Conduit:Telemetry";

    /// <summary>Collect the stack's meters and Conduit's own, and serve them at <see cref="MetricsPath"/>.</summary>
    public bool Metrics { get; set; } = true;

    /// <summary>Where the Prometheus text format is served (every listener).</summary>
    public string MetricsPath { get; set; } = "/metrics";

    /// <summary>Also ASP.NET Core's per-request http.server.request.duration (costly on small calls; off by default).</summary>
    public bool HttpMetrics { get; set; }

    /// <summary>
    /// Record spans (ASP.NET Core's per-request activity, the gRPC client's calls, Conduit's own).
    /// Off by default: then ASP.NET Core makes no per-request Activity at all. On by itself when
    /// <see cref="OtlpEndpoint"/> is set.
    /// </summary>
    public bool Tracing { get; set; }

    /// <summary>The share of new traces recorded (0..1); a call that arrives with a traceparent follows its caller's decision.</summary>
    public double SampleRatio { get; set; } = 1.0;

    /// <summary>An OpenTelemetry collector to push traces and metrics to, e.g. http://127.0.0.1:4317; none by default.</summary>
    public string? OtlpEndpoint { get; set; }

    /// <summary>grpc (default, port 4317) or http/protobuf (port 4318).</summary>
    public string OtlpProtocol { get; set; } = "grpc";

    /// <summary>The service.name resource attribute of everything exported.</summary>
    public string ServiceName { get; set; } = "conduit";

    public bool TracingEnabled => Tracing || !string.IsNullOrEmpty(OtlpEndpoint);
}

/// <summary>The server's console log, bound from "Conduit:Logging".</summary>
public sealed class LoggingOptions
{
    public const string Section = "Conduit:Logging";

    /// <summary>simple (one line of text per entry, the default) or json (one JSON object per line).</summary>
    public string Format { get; set; } = "simple";
}
