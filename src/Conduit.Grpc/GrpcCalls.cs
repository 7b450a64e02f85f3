using Grpc.AspNetCore.Server;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Conduit.Grpc;

/// <summary>
/// One middleware in front of grpc-dotnet's endpoints, for what it does not do (or does at a cost
/// on every call):
/// <list type="bullet">
/// <item>Streaming calls end when the server begins to stop: their cancellation (grpc-dotnet's
/// ServerCallContext.CancellationToken is HttpContext.RequestAborted) is linked to the
/// application's stopping token, and <see cref="ShutdownExceptionMapper"/> turns the result into
/// UNAVAILABLE with RetryInfo, so a chat, a tail or a dump learns at once to reconnect instead of
/// holding the shutdown for its whole timeout and then being reset. Unary calls finish.</item>
/// <item>No DI scope per call for services registered as singletons: grpc-dotnet resolves the
/// service and its interceptors from HttpContext.RequestServices, which creates a scope on first
/// use; for a singleton service the root provider answers the same, without the scope.</item>
/// <item>UNIMPLEMENTED for gRPC requests no endpoint took (with
/// <c>GrpcServiceOptions.IgnoreUnknownServices</c>): grpc-dotnet's own catch-all endpoints have route
/// parameters, so routing builds route values for them on every call to a real method.</item>
/// </list>
/// </summary>
public static class GrpcCalls
{
    /// <param name="app">The application, after routing (WebApplication adds it first) and before the endpoints run.</param>
    /// <param name="isSingleton">Whether a service type is registered as a singleton (so needs no scope).</param>
    public static IApplicationBuilder UseGrpcCalls(this IApplicationBuilder app, Func<Type, bool> isSingleton)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(isSingleton);
        var root = app.ApplicationServices;
        var stopping = root.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping;
        var services = new Lazy<HashSet<string>>(() => ServiceNames(root).ToHashSet(StringComparer.Ordinal));
        var singletons = new System.Collections.Concurrent.ConcurrentDictionary<Type, bool>();
        return app.Use((http, next) =>
        {
            var endpoint = http.GetEndpoint();
            var grpc = endpoint?.Metadata.GetMetadata<GrpcMethodMetadata>();
            if (grpc is null)
            {
                return endpoint is null && IsGrpcRequest(http.Request) ? Unimplemented(http, services.Value) : next(http);
            }
            // Not where authorization may run: its handlers are scoped and hold a request's state.
            if (singletons.GetOrAdd(grpc.ServiceType, isSingleton) && endpoint!.Metadata.GetMetadata<Microsoft.AspNetCore.Authorization.IAuthorizeData>() is null)
            {
                http.RequestServices = root;
            }
            return grpc.Method.Type == MethodType.Unary || endpoint!.Metadata.GetMetadata<EndsItselfAtShutdown>() is not null
                ? next(http) : StreamingAsync(http, next, stopping);
        });
    }

    private static async Task StreamingAsync(HttpContext http, RequestDelegate next, CancellationToken stopping)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted, stopping);
        http.RequestAborted = linked.Token;
        await next(http).ConfigureAwait(false);
    }

    /// <summary>POST with content-type application/grpc or application/grpc+proto (or ;params), as grpc-dotnet checks it.</summary>
    private static bool IsGrpcRequest(HttpRequest request)
    {
        if (!HttpMethods.IsPost(request.Method)) return false;
        var type = request.ContentType;
        if (type is null || !type.StartsWith("application/grpc", StringComparison.OrdinalIgnoreCase)) return false;
        return type.Length == 16 || type[16] is '+' or ';';
    }

    /// <summary>A trailers-only UNIMPLEMENTED, telling an unknown service from an unknown method as grpc-dotnet does.</summary>
    private static Task Unimplemented(HttpContext http, HashSet<string> services)
    {
        var path = http.Request.Path.Value ?? "";
        var slash = path.IndexOf('/', 1);
        var service = slash > 1 ? path[1..slash] : path.TrimStart('/');
        http.Response.StatusCode = StatusCodes.Status200OK;
        http.Response.ContentType = "application/grpc";
        http.Response.Headers["grpc-status"] = "12";
        http.Response.Headers["grpc-message"] = services.Contains(service) ? "Method is unimplemented." : "Service is unimplemented.";
        return Task.CompletedTask;
    }

    /// <summary>The gRPC services the application maps, in the order they were mapped.</summary>
    public static IReadOnlyList<string> ServiceNames(IServiceProvider services) =>
        services.GetRequiredService<Microsoft.AspNetCore.Routing.EndpointDataSource>().Endpoints
            .Select(e => e.Metadata.GetMetadata<GrpcMethodMetadata>()?.Method.ServiceName)
            .OfType<string>().Distinct().ToList();
}

/// <summary>
/// Endpoint metadata for a streaming method that ends itself when the server begins to stop, so
/// <see cref="GrpcCalls"/> leaves its cancellation alone: the health service's Watch answers
/// NOT_SERVING first and then completes (cutting it at once would lose that last message).
/// </summary>
public sealed class EndsItselfAtShutdown
{
    public static EndsItselfAtShutdown Instance { get; } = new();

    private EndsItselfAtShutdown()
    {
    }
}

/// <summary>A streaming call cut short by the server's shutdown (see <see cref="GrpcCalls"/>) ends UNAVAILABLE with RetryInfo.</summary>
public sealed class ShutdownExceptionMapper(IHostApplicationLifetime lifetime) : IExceptionMapper
{
    /// <summary>
    /// Whatever a handler throws once its call was cancelled by the shutdown (an
    /// OperationCanceledException, or grpc-dotnet's InvalidOperationException for a read or write
    /// without the token after the call's RequestAborted fired).
    /// </summary>
    public RpcException? Map(Exception exception, ServerCallContext context) =>
        lifetime.ApplicationStopping.IsCancellationRequested && context.CancellationToken.IsCancellationRequested
            ? RpcException.WithDetails(StatusCode.Unavailable, "The server is shutting down; call again.",
                Details.RetryInfo(TimeSpan.FromSeconds(1)), Details.ErrorInfo("SERVER_STOPPING", "conduit"))
            : null;
}
