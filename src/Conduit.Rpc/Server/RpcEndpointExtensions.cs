using System.Reflection;
using Conduit.Rpc.Wire;
using Microsoft.AspNetCore.Builder;
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
        MapUnimplemented(endpoints, runtime);
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

    private static void MapUnimplemented(IEndpointRouteBuilder endpoints, ServerRuntime runtime)
    {
        if (runtime.FallbackMapped) return;
        runtime.FallbackMapped = true;
        endpoints.MapPost("/{service}/{method}", http =>
        {
            var service = (string?)http.Request.RouteValues["service"] ?? string.Empty;
            http.Response.StatusCode = GrpcProtocol.IsGrpcContentType(http.Request.ContentType)
                ? StatusCodes.Status200OK
                : StatusCodes.Status415UnsupportedMediaType;
            http.Response.ContentType = GrpcProtocol.ContentType;
            var code = http.Response.StatusCode == StatusCodes.Status200OK ? StatusCode.Unimplemented : StatusCode.Internal;
            var message = code == StatusCode.Internal
                ? $"Content-Type '{http.Request.ContentType}' is not supported."
                : runtime.ServiceNames.Contains(service) ? "Method is unimplemented." : "Service is unimplemented.";
            http.Response.Headers[GrpcProtocol.StatusTrailer] = ((int)code).ToString(System.Globalization.CultureInfo.InvariantCulture);
            http.Response.Headers[GrpcProtocol.MessageTrailer] = HeaderEncoding.PercentEncode(message);
            return Task.CompletedTask;
        }).WithDisplayName("gRPC unimplemented");
    }

    private sealed class CompositeConventionBuilder(List<IEndpointConventionBuilder> builders) : IEndpointConventionBuilder
    {
        public void Add(Action<EndpointBuilder> convention)
        {
            foreach (var builder in builders) builder.Add(convention);
        }
    }
}
