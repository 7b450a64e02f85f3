using Conduit.Grpc.Tests.Protos;
using Grpc.Core;

namespace Conduit.Grpc.Tests;

/// <summary>
/// What the probe services' handlers saw, and how they behave. Request metadata chooses:
/// <c>x-fail</c> = "unknown" (InvalidOperationException with a secret), "mapped"
/// (<see cref="BackendDownException"/>, which <see cref="BackendDownMapper"/> maps), "code=N"
/// (RpcException N), "status=N" (sets context.Status to N and returns normally);
/// <c>x-when</c> = "sync" (thrown before the handler returns its task) or "async" (default, after an await).
/// </summary>
public sealed class ProbeScript
{
    private int _runs;

    public int Runs => Volatile.Read(ref _runs);

    public bool? DryRunSeen { get; private set; }

    public const string SecretText = "secret internal state";

    /// <summary>Called at the start of every handler; throws synchronously when asked to.</summary>
    public void Enter(ServerCallContext context)
    {
        Interlocked.Increment(ref _runs);
        DryRunSeen = DryRun.IsRequested(context);
        if (context.RequestHeaders.GetValue("x-when") == "sync") Fail(context);
    }

    /// <summary>Fails (or sets a status) as the metadata asks; for "sync" that already happened.</summary>
    public async Task AfterAwait(ServerCallContext context)
    {
        await Task.Yield();
        if (context.RequestHeaders.GetValue("x-when") != "sync") Fail(context);
    }

    private static void Fail(ServerCallContext context)
    {
        var fail = context.RequestHeaders.GetValue("x-fail");
        switch (fail)
        {
            case null:
                return;
            case "unknown":
                throw new InvalidOperationException(SecretText);
            case "mapped":
                throw new BackendDownException("the backend is down");
            case var code when code.StartsWith("code=", StringComparison.Ordinal):
                throw new RpcException(new Status((StatusCode)int.Parse(code[5..], System.Globalization.CultureInfo.InvariantCulture), "asked for"));
            case var status when status.StartsWith("status=", StringComparison.Ordinal):
                context.Status = new Status((StatusCode)int.Parse(status[7..], System.Globalization.CultureInfo.InvariantCulture), "set, not thrown");
                return;
            default:
                throw new ArgumentException("unknown x-fail " + fail);
        }
    }
}

public sealed class BackendDownException(string message) : Exception(message);

/// <summary>Maps <see cref="BackendDownException"/> to UNAVAILABLE with RetryInfo and ErrorInfo.</summary>
public sealed class BackendDownMapper : IExceptionMapper
{
    public RpcException? Map(Exception exception, ServerCallContext context) => exception is BackendDownException
        ? RpcException.WithDetails(StatusCode.Unavailable, "Backend unavailable: " + exception.Message,
            Details.RetryInfo(TimeSpan.FromSeconds(2)), Details.ErrorInfo("BACKEND_DOWN", "tests.conduit", new Dictionary<string, string> { ["method"] = context.Method }))
        : null;
}

/// <summary>The four call kinds: unary echoes; client streaming counts; server streaming writes count messages; duplex echoes each.</summary>
internal static class ProbeHandlers
{
    public static Task<Msg> Unary(ProbeScript script, Msg request, ServerCallContext context)
    {
        script.Enter(context);
        return Run(script, request, context);

        static async Task<Msg> Run(ProbeScript script, Msg request, ServerCallContext context)
        {
            await script.AfterAwait(context);
            return new Msg { Text = request.Text, Count = 1 };
        }
    }

    public static Task<Msg> ClientStream(ProbeScript script, IAsyncStreamReader<Msg> requests, ServerCallContext context)
    {
        script.Enter(context);
        return Run(script, requests, context);

        static async Task<Msg> Run(ProbeScript script, IAsyncStreamReader<Msg> requests, ServerCallContext context)
        {
            var count = 0;
            await foreach (var _ in requests.ReadAllAsync(context.CancellationToken)) count++;
            await script.AfterAwait(context);
            return new Msg { Count = count };
        }
    }

    public static Task ServerStream(ProbeScript script, Msg request, IServerStreamWriter<Msg> responses, ServerCallContext context)
    {
        script.Enter(context);
        return Run(script, request, responses, context);

        static async Task Run(ProbeScript script, Msg request, IServerStreamWriter<Msg> responses, ServerCallContext context)
        {
            for (var i = 0; i < request.Count; i++) await responses.WriteAsync(new Msg { Text = request.Text, Count = i });
            await script.AfterAwait(context);
        }
    }

    public static Task Duplex(ProbeScript script, IAsyncStreamReader<Msg> requests, IServerStreamWriter<Msg> responses, ServerCallContext context)
    {
        script.Enter(context);
        return Run(script, requests, responses, context);

        static async Task Run(ProbeScript script, IAsyncStreamReader<Msg> requests, IServerStreamWriter<Msg> responses, ServerCallContext context)
        {
            await foreach (var request in requests.ReadAllAsync(context.CancellationToken)) await responses.WriteAsync(request);
            await script.AfterAwait(context);
        }
    }
}

/// <summary>conduit.tests.Probe: no method honours dry run.</summary>
public sealed class ProbeService(ProbeScript script) : Probe.ProbeBase
{
    public override Task<Msg> Unary(Msg request, ServerCallContext context) => ProbeHandlers.Unary(script, request, context);

    public override Task<Msg> ClientStream(IAsyncStreamReader<Msg> requestStream, ServerCallContext context) => ProbeHandlers.ClientStream(script, requestStream, context);

    public override Task ServerStream(Msg request, IServerStreamWriter<Msg> responseStream, ServerCallContext context) => ProbeHandlers.ServerStream(script, request, responseStream, context);

    public override Task Duplex(IAsyncStreamReader<Msg> requestStream, IServerStreamWriter<Msg> responseStream, ServerCallContext context) => ProbeHandlers.Duplex(script, requestStream, responseStream, context);
}

/// <summary>conduit.tests.DryRunProbe: every method honours dry run.</summary>
public sealed class DryRunProbeService(ProbeScript script) : DryRunProbe.DryRunProbeBase
{
    [DryRunSupported]
    public override Task<Msg> Unary(Msg request, ServerCallContext context) => ProbeHandlers.Unary(script, request, context);

    [DryRunSupported]
    public override Task<Msg> ClientStream(IAsyncStreamReader<Msg> requestStream, ServerCallContext context) => ProbeHandlers.ClientStream(script, requestStream, context);

    [DryRunSupported]
    public override Task ServerStream(Msg request, IServerStreamWriter<Msg> responseStream, ServerCallContext context) => ProbeHandlers.ServerStream(script, request, responseStream, context);

    [DryRunSupported]
    public override Task Duplex(IAsyncStreamReader<Msg> requestStream, IServerStreamWriter<Msg> responseStream, ServerCallContext context) => ProbeHandlers.Duplex(script, requestStream, responseStream, context);
}

public enum CallKind { Unary, ClientStreaming, ServerStreaming, Duplex }

/// <summary>Makes one call of each kind through any CallInvoker and returns how it ended.</summary>
public static class ProbeCalls
{
    public sealed record Outcome(Status Status, RpcException? Error, int Messages);

    public static async Task<Outcome> CallAsync(CallInvoker invoker, CallKind kind, Metadata? headers = null, bool dryRunProbe = false)
    {
        var options = new CallOptions(headers).WithTimeout(TimeSpan.FromSeconds(20));
        var probe = new Probe.ProbeClient(invoker);
        var dry = new DryRunProbe.DryRunProbeClient(invoker);
        var messages = 0;
        try
        {
            switch (kind)
            {
                case CallKind.Unary:
                {
                    using var call = dryRunProbe ? dry.UnaryAsync(new Msg { Text = "u" }, options) : probe.UnaryAsync(new Msg { Text = "u" }, options);
                    await call;
                    return new Outcome(call.GetStatus(), null, 1);
                }
                case CallKind.ClientStreaming:
                {
                    using var call = dryRunProbe ? dry.ClientStream(options) : probe.ClientStream(options);
                    await WriteIgnoringFailure(call.RequestStream, 2);
                    var reply = await call;
                    return new Outcome(call.GetStatus(), null, reply.Count);
                }
                case CallKind.ServerStreaming:
                {
                    using var call = dryRunProbe ? dry.ServerStream(new Msg { Count = 3 }, options) : probe.ServerStream(new Msg { Count = 3 }, options);
                    await foreach (var _ in call.ResponseStream.ReadAllAsync()) messages++;
                    return new Outcome(call.GetStatus(), null, messages);
                }
                default:
                {
                    using var call = dryRunProbe ? dry.Duplex(options) : probe.Duplex(options);
                    await WriteIgnoringFailure(call.RequestStream, 1);
                    await foreach (var _ in call.ResponseStream.ReadAllAsync()) messages++;
                    return new Outcome(call.GetStatus(), null, messages);
                }
            }
        }
        catch (RpcException ex)
        {
            return new Outcome(ex.Status, ex, messages);
        }
    }

    /// <summary>
    /// Writes and half-closes; a write that fails because the server already ended the call is
    /// ignored: grpc-dotnet may fail it CANCELLED before the status arrived, and the call's real
    /// status is what the response side reports.
    /// </summary>
    private static async Task WriteIgnoringFailure(IClientStreamWriter<Msg> requests, int count)
    {
        try
        {
            for (var i = 0; i < count; i++) await requests.WriteAsync(new Msg { Text = "w" });
            await requests.CompleteAsync();
        }
        catch (RpcException)
        {
        }
    }

    public static Task<Outcome> CallAsync(TestHost host, CallKind kind, Metadata? headers = null, bool dryRunProbe = false) =>
        CallAsync(host.Channel.CreateCallInvoker(), kind, headers, dryRunProbe);

    /// <summary>A host serving both probe services with <see cref="BackendDownMapper"/> registered.</summary>
    public static Task<TestHost> StartAsync(ProbeScript script, Action<Microsoft.Extensions.DependencyInjection.IServiceCollection>? services = null, Microsoft.Extensions.Logging.LogLevel logLevel = Microsoft.Extensions.Logging.LogLevel.Warning) =>
        TestHost.StartAsync(s =>
        {
            Microsoft.Extensions.DependencyInjection.ServiceCollectionServiceExtensions.AddSingleton(s, script);
            Microsoft.Extensions.DependencyInjection.ServiceCollectionServiceExtensions.AddSingleton<ProbeService>(s);
            Microsoft.Extensions.DependencyInjection.ServiceCollectionServiceExtensions.AddSingleton<DryRunProbeService>(s);
            Microsoft.Extensions.DependencyInjection.ServiceCollectionServiceExtensions.AddSingleton<IExceptionMapper, BackendDownMapper>(s);
            services?.Invoke(s);
        }, app =>
        {
            Microsoft.AspNetCore.Builder.GrpcEndpointRouteBuilderExtensions.MapGrpcService<ProbeService>(app);
            Microsoft.AspNetCore.Builder.GrpcEndpointRouteBuilderExtensions.MapGrpcService<DryRunProbeService>(app);
        }, logLevel: logLevel);
}
