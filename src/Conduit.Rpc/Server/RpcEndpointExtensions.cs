using System.Reflection;
using Conduit.Rpc.Wire;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Conduit.Rpc.Server;

public static class RpcServiceCollectionExtensions
{
    /// <summary>Adds the gRPC server runtime.</summary>
    public static IServiceCollection AddRpc(this IServiceCollection services, Action<RpcServerOptions>? configure = null)
    {
        services.AddRouting();
        services.AddOptions<RpcServerOptions>();
        if (configure is not null) services.Configure(configure);
        services.TryAddSingleton<ServerRuntime>();
        services.TryAddSingleton<RpcServerMetrics>();
        services.TryAddSingleton(new RpcServiceRegistrations(services));
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IStartupFilter, UnimplementedStartupFilter>());
        return services;
    }
}

public static class RpcEndpointRouteBuilderExtensions
{
    /// <summary>
    /// Maps every RPC of <typeparamref name="TService"/> (a class deriving from a generated
    /// service base) at "/package.Service/Method". Calls to services or methods that are not
    /// mapped answer UNIMPLEMENTED.
    /// </summary>
    public static IEndpointConventionBuilder MapRpcService<TService>(this IEndpointRouteBuilder endpoints) where TService : class
    {
        var runtime = endpoints.ServiceProvider.GetService<ServerRuntime>()
            ?? throw new InvalidOperationException("Call services.AddRpc() before mapping RPC services.");
        var binder = new ServiceBinder<TService>();
        FindBinder(typeof(TService)).MakeGenericMethod(typeof(TService)).Invoke(null, [binder]);

        var builders = new List<IEndpointConventionBuilder>();
        foreach (var method in binder.Methods)
        {
            runtime.ServiceNames.Add(method.Method.ServiceName);
            var handler = method.CreateDelegate(endpoints.ServiceProvider, runtime);
            builders.Add(endpoints.MapPost(method.Method.FullName, handler).WithDisplayName("gRPC " + method.Method.FullName));
        }
        return new CompositeConventionBuilder(builders);
    }

    private static MethodInfo FindBinder(Type serviceType)
    {
        for (var type = serviceType; type is not null; type = type.BaseType)
        {
            foreach (var method in type.GetMethods(BindingFlags.Public | BindingFlags.Static | BindingFlags.DeclaredOnly))
            {
                if (method.GetCustomAttribute<RpcServiceBinderAttribute>() is not null) return method;
            }
        }
        throw new InvalidOperationException($"{serviceType} does not derive from a generated service base class.");
    }

    private sealed class CompositeConventionBuilder(List<IEndpointConventionBuilder> builders) : IEndpointConventionBuilder
    {
        public void Add(Action<EndpointBuilder> convention)
        {
            foreach (var builder in builders) builder.Add(convention);
        }
    }
}

/// <summary>
/// Answers gRPC requests that no endpoint took: UNIMPLEMENTED, telling an unknown service from an
/// unknown method. It runs at the very end of the pipeline rather than as a route with
/// parameters, which would make routing allocate route values for every call.
/// </summary>
internal sealed class UnimplementedStartupFilter(ServerRuntime runtime) : IStartupFilter
{
    public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next) => app =>
    {
        next(app);
        app.Run(http =>
        {
            var grpc = GrpcProtocol.IsGrpcContentType(http.Request.ContentType);
            if (!HttpMethods.IsPost(http.Request.Method) || (!grpc && runtime.ServiceNames.Count == 0))
            {
                http.Response.StatusCode = StatusCodes.Status404NotFound;
                return Task.CompletedTask;
            }
            var path = http.Request.Path.Value ?? string.Empty;
            var slash = path.IndexOf('/', 1);
            var service = slash > 1 ? path[1..slash] : path.TrimStart('/');
            http.Response.StatusCode = grpc ? StatusCodes.Status200OK : StatusCodes.Status415UnsupportedMediaType;
            http.Response.ContentType = GrpcProtocol.ContentType;
            var code = grpc ? StatusCode.Unimplemented : StatusCode.Internal;
            var message = !grpc
                ? $"Content-Type '{http.Request.ContentType}' is not supported."
                : runtime.ServiceNames.Contains(service) ? "Method is unimplemented." : "Service is unimplemented.";
            http.Response.Headers[GrpcProtocol.StatusTrailer] = ((int)code).ToString(System.Globalization.CultureInfo.InvariantCulture);
            http.Response.Headers[GrpcProtocol.MessageTrailer] = HeaderEncoding.PercentEncode(message);
            return Task.CompletedTask;
        });
    };
}
