using Grpc.AspNetCore.Server;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Conduit.Grpc;

/// <summary>
/// Ends open streaming calls when the server begins to stop, with UNAVAILABLE and RetryInfo, so a
/// chat, a tail or a dump learns at once that it should reconnect (to another server, or this one
/// once it is back) instead of holding the shutdown for its whole timeout and then being cut off
/// with a reset stream. Unary calls are left to finish: they are short, and cost nothing here.
/// </summary>
public static class StreamingShutdown
{
    /// <summary>
    /// Links each streaming call's cancellation (grpc-dotnet's ServerCallContext.CancellationToken
    /// is HttpContext.RequestAborted) to the application's stopping token. Call it after routing
    /// is known and before the gRPC endpoints run.
    /// </summary>
    public static IApplicationBuilder UseStreamingShutdown(this IApplicationBuilder app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var stopping = app.ApplicationServices.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping;
        return app.Use(async (http, next) =>
        {
            var method = http.GetEndpoint()?.Metadata.GetMetadata<GrpcMethodMetadata>()?.Method;
            if (method is null || method.Type == MethodType.Unary)
            {
                await next(http).ConfigureAwait(false);
                return;
            }
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted, stopping);
            http.RequestAborted = linked.Token;
            await next(http).ConfigureAwait(false);
        });
    }
}

/// <summary>A streaming call cut short by <see cref="StreamingShutdown"/> ends UNAVAILABLE with RetryInfo.</summary>
public sealed class ShutdownExceptionMapper(IHostApplicationLifetime lifetime) : IExceptionMapper
{
    public RpcException? Map(Exception exception, ServerCallContext context) =>
        exception is OperationCanceledException or IOException && lifetime.ApplicationStopping.IsCancellationRequested
            ? RpcException.WithDetails(StatusCode.Unavailable, "The server is shutting down; call again.",
                Details.RetryInfo(TimeSpan.FromSeconds(1)), Details.ErrorInfo("SERVER_STOPPING", "conduit"))
            : null;
}
