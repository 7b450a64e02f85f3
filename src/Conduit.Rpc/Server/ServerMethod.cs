using System.Diagnostics;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Rpc.Server;

/// <summary>One bound RPC, turned into an ASP.NET Core request delegate.</summary>
internal interface IServerMethod
{
    IMethod Method { get; }

    RequestDelegate CreateDelegate(IServiceProvider services, ServerRuntime runtime);
}

internal sealed class ServerMethod<TService, TRequest, TResponse>(
    Method<TRequest, TResponse> method,
    Func<HttpServerCall<TRequest, TResponse>, TService, Task> body) : IServerMethod
    where TService : class
{
    public IMethod Method => method;

    public RequestDelegate CreateDelegate(IServiceProvider services, ServerRuntime runtime)
    {
        var activator = new ServiceActivator<TService>(services);
        return async http =>
        {
            var start = Stopwatch.GetTimestamp();
            var call = new HttpServerCall<TRequest, TResponse>(http, method, runtime);
            if (!call.TryStart(out var failure))
            {
                call.Complete(failure, start);
                return;
            }
            Status status;
            TService? service = null;
            ServerCallContext.Current = call;
            try
            {
                service = activator.Create(http);
                await body(call, service).ConfigureAwait(false);
                // A handler that finished after its deadline still failed: the client gave up.
                status = call.DeadlineExceeded ? new Status(StatusCode.DeadlineExceeded, "Deadline Exceeded") : call.Status;
            }
            catch (Exception ex)
            {
                status = call.StatusFromException(ex);
            }
            finally
            {
                // ServerCallContext.Current needs no reset: an async method's AsyncLocal changes
                // never reach its caller.
                if (service is not null) await activator.ReleaseAsync(service).ConfigureAwait(false);
            }
            await call.StopAbandonedReadAsync().ConfigureAwait(false);
            call.Complete(status, start);
        };
    }
}

/// <summary>
/// Gets the service instance for a call: a singleton registered in DI is resolved once; a scoped
/// or transient registration is resolved per call from the request's services; an unregistered
/// service is built per call with DI (ActivatorUtilities) and disposed after it.
/// </summary>
internal sealed class ServiceActivator<TService> where TService : class
{
    private readonly bool _registered;
    private readonly ObjectFactory<TService>? _factory;
    private readonly Lazy<TService>? _singleton;

    public ServiceActivator(IServiceProvider services)
    {
        var lifetime = services.GetService<RpcServiceRegistrations>()?.LifetimeOf(typeof(TService));
        _registered = lifetime is not null || (services.GetService<IServiceProviderIsService>()?.IsService(typeof(TService)) ?? false);
        if (lifetime == ServiceLifetime.Singleton) _singleton = new Lazy<TService>(services.GetRequiredService<TService>);
        if (!_registered) _factory = ActivatorUtilities.CreateFactory<TService>([]);
    }

    public TService Create(HttpContext http) =>
        _singleton?.Value ?? (_registered ? http.RequestServices.GetRequiredService<TService>() : _factory!(http.RequestServices, null));

    public ValueTask ReleaseAsync(TService service)
    {
        if (_registered) return ValueTask.CompletedTask;
        if (service is IAsyncDisposable asyncDisposable) return asyncDisposable.DisposeAsync();
        (service as IDisposable)?.Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>
/// The service collection as registered, kept by AddRpc so a singleton service is resolved once
/// instead of through a per-request DI scope.
/// </summary>
internal sealed class RpcServiceRegistrations(IServiceCollection services)
{
    public ServiceLifetime? LifetimeOf(Type type) => services.LastOrDefault(d => d.ServiceType == type && !d.IsKeyedService)?.Lifetime;
}
