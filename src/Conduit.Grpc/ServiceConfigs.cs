using System.Globalization;
using System.Text.Json;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client.Configuration;

namespace Conduit.Grpc;

/// <summary>
/// gRPC service configs (grpc/grpc doc/service_config.md, gRFC A6) as JSON, for
/// <see cref="ConduitChannel"/>: <c>loadBalancingConfig</c> (pick_first, round_robin),
/// <c>methodConfig</c> with <c>name</c>, <c>timeout</c>, <c>waitForReady</c>, <c>retryPolicy</c>,
/// <c>hedgingPolicy</c>; <c>retryThrottling</c>; <c>healthCheckConfig.serviceName</c>.
/// grpc-dotnet's <see cref="ServiceConfig"/> carries retries, hedging, throttling and balancing;
/// timeout and waitForReady, which it lacks, are applied per call by <see cref="MethodDefaults"/>.
/// </summary>
public sealed class ConduitServiceConfig
{
    /// <summary>grpc-dotnet's part: balancing, retries, hedging, throttling.</summary>
    public ServiceConfig Config { get; } = new();

    /// <summary>Per-method timeout and waitForReady ("service/method", "service/" or "" for all).</summary>
    public Dictionary<string, (TimeSpan? Timeout, bool? WaitForReady)> Methods { get; } = new(StringComparer.Ordinal);

    /// <summary>The service whose health round_robin watches (healthCheckConfig.serviceName); null: no health checking asked for.</summary>
    public string? HealthCheckServiceName { get; set; }

    /// <summary>The JSON this was read from (for messages).</summary>
    public string? Json { get; private set; }

    /// <summary>
    /// Conduit's default: unary methods that only read retried on UNAVAILABLE up to 3 attempts
    /// (0.1 s, then 0.2 s backoff, ±jitter); writes (Produce, CreateUsers, CreateTopic, Store ...)
    /// are never retried, since a retry after a lost response would do them twice. Server streams
    /// (ListUsers, ConsumeStream, Dump) are left out too: grpc-dotnet's retrying call does not
    /// cancel the server's work when the caller disposes it early.
    /// </summary>
    public const string DefaultJson = """
        {
          "methodConfig": [ {
            "name": [
              { "service": "helloworld.Greeter", "method": "SayHello" },
              { "service": "user.v1.UserService", "method": "GetUser" },
              { "service": "user.v1.UserService", "method": "GetUserByEmail" },
              { "service": "log.v1.Log", "method": "Consume" },
              { "service": "log.v1.LogAdmin", "method": "ListTopics" },
              { "service": "log.v1.LogAdmin", "method": "DescribeTopic" },
              { "service": "cache.v1.Cache", "method": "Get" },
              { "service": "accounts.v1.Accounts", "method": "GetByToken" },
              { "service": "accounts.v1.Accounts", "method": "ListAccounts" },
              { "service": "grpc.health.v1.Health", "method": "Check" }
            ],
            "retryPolicy": {
              "maxAttempts": 3,
              "initialBackoff": "0.1s",
              "maxBackoff": "1s",
              "backoffMultiplier": 2,
              "retryableStatusCodes": [ "UNAVAILABLE" ]
            }
          } ]
        }
        """;

    /// <summary>Conduit's default (<see cref="DefaultJson"/>).</summary>
    public static ConduitServiceConfig Default() => Parse(DefaultJson);

    /// <summary>Reads a service config; a wrong one is an <see cref="ArgumentException"/> that says where.</summary>
    public static ConduitServiceConfig Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        }
        catch (JsonException ex)
        {
            throw new ArgumentException($"service config: not JSON: {ex.Message}", nameof(json), ex);
        }
        using (document)
        {
            var result = new ConduitServiceConfig { Json = json };
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Bad("the service config must be a JSON object");
            foreach (var property in root.EnumerateObject())
            {
                switch (property.Name)
                {
                    case "loadBalancingConfig":
                        foreach (var policy in Array(property.Value, "loadBalancingConfig"))
                        {
                            var only = policy.ValueKind == JsonValueKind.Object ? policy.EnumerateObject().ToList() : [];
                            if (only.Count != 1) throw Bad("each loadBalancingConfig entry is an object with one policy name, like {\"round_robin\": {}}");
                            result.Config.LoadBalancingConfigs.Add(only[0].Name switch
                            {
                                LoadBalancingConfig.PickFirstPolicyName => new PickFirstConfig(),
                                LoadBalancingConfig.RoundRobinPolicyName => new RoundRobinConfig(),
                                var other => new LoadBalancingConfig(other),
                            });
                        }
                        break;
                    case "loadBalancingPolicy":
                        result.Config.LoadBalancingConfigs.Add(new LoadBalancingConfig(ToSnake(property.Value.GetString() ?? "")));
                        break;
                    case "methodConfig":
                        foreach (var method in Array(property.Value, "methodConfig")) result.AddMethodConfig(method);
                        break;
                    case "retryThrottling":
                        result.Config.RetryThrottling = new RetryThrottlingPolicy
                        {
                            MaxTokens = Int(property.Value, "maxTokens", "retryThrottling"),
                            TokenRatio = Number(property.Value, "tokenRatio", "retryThrottling"),
                        };
                        break;
                    case "healthCheckConfig":
                        result.HealthCheckServiceName = property.Value.TryGetProperty("serviceName", out var name) ? name.GetString() ?? "" : "";
                        break;
                    default:
                        break; // grpc ignores what it does not know
                }
            }
            return result;
        }
    }

    private static string ToSnake(string policy) => policy.ToUpperInvariant() switch
    {
        "ROUND_ROBIN" => LoadBalancingConfig.RoundRobinPolicyName,
        "PICK_FIRST" => LoadBalancingConfig.PickFirstPolicyName,
        _ => policy,
    };

    private void AddMethodConfig(JsonElement method)
    {
        var config = new MethodConfig();
        var names = method.TryGetProperty("name", out var n) ? Array(n, "methodConfig.name").ToList() : [];
        if (names.Count == 0) throw Bad("each methodConfig needs a \"name\" list, like [{\"service\": \"log.v1.Log\", \"method\": \"Consume\"}] ([{}] for every method)");
        var keys = new List<string>();
        foreach (var name in names)
        {
            var service = name.TryGetProperty("service", out var s) ? s.GetString() ?? "" : "";
            var methodName = name.TryGetProperty("method", out var m) ? m.GetString() ?? "" : "";
            if (service.Length == 0 && methodName.Length > 0) throw Bad("a methodConfig name with a method needs its service");
            config.Names.Add(service.Length == 0 ? MethodName.Default : new MethodName { Service = service, Method = methodName.Length == 0 ? null : methodName });
            keys.Add(service.Length == 0 ? "" : service + "/" + methodName);
        }
        TimeSpan? timeout = method.TryGetProperty("timeout", out var t) ? Duration(t, "methodConfig.timeout") : null;
        bool? waitForReady = method.TryGetProperty("waitForReady", out var w) ? w.ValueKind == JsonValueKind.True : null;
        if (method.TryGetProperty("retryPolicy", out var retry))
        {
            var policy = new RetryPolicy
            {
                MaxAttempts = Int(retry, "maxAttempts", "retryPolicy"),
                InitialBackoff = Duration(Property(retry, "initialBackoff", "retryPolicy"), "retryPolicy.initialBackoff"),
                MaxBackoff = Duration(Property(retry, "maxBackoff", "retryPolicy"), "retryPolicy.maxBackoff"),
                BackoffMultiplier = Number(retry, "backoffMultiplier", "retryPolicy"),
            };
            foreach (var code in Codes(retry, "retryableStatusCodes", "retryPolicy")) policy.RetryableStatusCodes.Add(code);
            if (policy.RetryableStatusCodes.Count == 0) throw Bad("retryPolicy.retryableStatusCodes must name at least one status code");
            config.RetryPolicy = policy;
        }
        if (method.TryGetProperty("hedgingPolicy", out var hedging))
        {
            if (config.RetryPolicy is not null) throw Bad("a methodConfig has a retryPolicy or a hedgingPolicy, not both");
            var policy = new HedgingPolicy
            {
                MaxAttempts = Int(hedging, "maxAttempts", "hedgingPolicy"),
                HedgingDelay = hedging.TryGetProperty("hedgingDelay", out var delay) ? Duration(delay, "hedgingPolicy.hedgingDelay") : TimeSpan.Zero,
            };
            if (hedging.TryGetProperty("nonFatalStatusCodes", out _)) foreach (var code in Codes(hedging, "nonFatalStatusCodes", "hedgingPolicy")) policy.NonFatalStatusCodes.Add(code);
            config.HedgingPolicy = policy;
        }
        if (config.RetryPolicy is not null || config.HedgingPolicy is not null) Config.MethodConfigs.Add(config);
        if (timeout is not null || waitForReady is not null)
        {
            foreach (var key in keys) Methods[key] = (timeout, waitForReady);
        }
    }

    /// <summary>The timeout and waitForReady for a method: its own entry, else its service's, else the default's.</summary>
    public (TimeSpan? Timeout, bool? WaitForReady) For(string serviceName, string methodName)
    {
        if (Methods.Count == 0) return default;
        if (Methods.TryGetValue(serviceName + "/" + methodName, out var own)) return own;
        if (Methods.TryGetValue(serviceName + "/", out var service)) return service;
        return Methods.TryGetValue("", out var all) ? all : default;
    }

    private static IEnumerable<JsonElement> Array(JsonElement value, string what) =>
        value.ValueKind == JsonValueKind.Array ? value.EnumerateArray() : throw Bad($"{what} must be a JSON array");

    private static JsonElement Property(JsonElement parent, string name, string what) =>
        parent.ValueKind == JsonValueKind.Object && parent.TryGetProperty(name, out var value) ? value : throw Bad($"{what}.{name} is required");

    private static int Int(JsonElement parent, string name, string what) =>
        Property(parent, name, what) is { ValueKind: JsonValueKind.Number } v && v.TryGetInt32(out var i) ? i : throw Bad($"{what}.{name} must be a whole number");

    private static double Number(JsonElement parent, string name, string what) =>
        Property(parent, name, what) is { ValueKind: JsonValueKind.Number } v ? v.GetDouble() : throw Bad($"{what}.{name} must be a number");

    private static IEnumerable<StatusCode> Codes(JsonElement parent, string name, string what)
    {
        foreach (var code in Array(Property(parent, name, what), $"{what}.{name}"))
        {
            if (code.ValueKind == JsonValueKind.Number && code.TryGetInt32(out var number) && Enum.IsDefined((StatusCode)number)) yield return (StatusCode)number;
            else if (code.ValueKind == JsonValueKind.String && Enum.TryParse<StatusCode>((code.GetString() ?? "").Replace("_", "", StringComparison.Ordinal), ignoreCase: true, out var parsed)
                && Enum.IsDefined(parsed)) yield return parsed;
            else throw Bad($"{what}.{name}: '{code}' is not a status code (UNAVAILABLE, 14, ...)");
        }
    }

    /// <summary>A protobuf JSON duration: "0.5s", "10s".</summary>
    private static TimeSpan Duration(JsonElement value, string what)
    {
        var text = value.ValueKind == JsonValueKind.String ? value.GetString() ?? "" : "";
        if (text.EndsWith('s') && double.TryParse(text[..^1], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var seconds) && seconds >= 0 && seconds < 315_576_000_000)
        {
            return TimeSpan.FromSeconds(seconds);
        }
        throw Bad($"{what} must be a duration like \"0.5s\", not {value.GetRawText()}");
    }

    private static ArgumentException Bad(string message) => new("service config: " + message);

    /// <summary>Applies the config's timeout (when the call has no earlier deadline) and waitForReady to each call.</summary>
    public sealed class MethodDefaults(ConduitServiceConfig config) : Interceptor
    {
        private ClientInterceptorContext<TRequest, TResponse> Apply<TRequest, TResponse>(ClientInterceptorContext<TRequest, TResponse> context)
            where TRequest : class where TResponse : class
        {
            var (timeout, waitForReady) = config.For(context.Method.ServiceName, context.Method.Name);
            if (timeout is null && waitForReady is null) return context;
            var options = context.Options;
            if (timeout is { } t && (options.Deadline is null || options.Deadline.Value - DateTime.UtcNow > t)) options = options.WithDeadline(DateTime.UtcNow + t);
            if (waitForReady is { } w && w && !options.IsWaitForReady) options = options.WithWaitForReady(true);
            return new ClientInterceptorContext<TRequest, TResponse>(context.Method, context.Host, options);
        }

        public override TResponse BlockingUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context, BlockingUnaryCallContinuation<TRequest, TResponse> continuation) =>
            continuation(request, Apply(context));

        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context, AsyncUnaryCallContinuation<TRequest, TResponse> continuation) =>
            continuation(request, Apply(context));

        public override AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context, AsyncServerStreamingCallContinuation<TRequest, TResponse> continuation) =>
            continuation(request, Apply(context));

        public override AsyncClientStreamingCall<TRequest, TResponse> AsyncClientStreamingCall<TRequest, TResponse>(ClientInterceptorContext<TRequest, TResponse> context, AsyncClientStreamingCallContinuation<TRequest, TResponse> continuation) =>
            continuation(Apply(context));

        public override AsyncDuplexStreamingCall<TRequest, TResponse> AsyncDuplexStreamingCall<TRequest, TResponse>(ClientInterceptorContext<TRequest, TResponse> context, AsyncDuplexStreamingCallContinuation<TRequest, TResponse> continuation) =>
            continuation(Apply(context));
    }
}
