using System.Reflection;
using Google.Protobuf;
using Grpc.AspNetCore.Server.Model;
using Grpc.Core;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Grpc;

/// <summary>
/// A request message that does not parse is the client's error: INVALID_ARGUMENT, not UNKNOWN.
/// Google.Protobuf refuses a string field that is not valid UTF-8 (it never replaces the bytes,
/// so two different keys cannot become one), a truncated field, a wrong wire type. grpc-dotnet
/// parses a unary or server-streaming request before any interceptor runs and answers any
/// exception but an <see cref="RpcException"/> with UNKNOWN; so the services are bound with
/// request marshallers that turn <see cref="InvalidProtocolBufferException"/> into
/// INVALID_ARGUMENT, for every call kind. This replaces grpc-dotnet's own binding of generated
/// services (its internal BinderServiceMethodProvider) by the same steps on its public extension
/// point, <see cref="IServiceMethodProvider{TService}"/>: the generated BindService, the handler
/// found by name, the service's and the method's attributes as endpoint metadata.
/// </summary>
public static class StrictParsing
{
    /// <summary>Binds gRPC services with strict request parsing. Call after the last AddGrpc.</summary>
    public static IServiceCollection UseStrictParsing(IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        for (var i = services.Count - 1; i >= 0; i--)
        {
            if (services[i].ServiceType == typeof(IServiceMethodProvider<>)
                && services[i].ImplementationType is { Name: "BinderServiceMethodProvider`1" })
            {
                services.RemoveAt(i);
            }
        }
        if (!services.Any(d => d.ServiceType == typeof(IServiceMethodProvider<>) && d.ImplementationType == typeof(StrictServiceMethodProvider<>)))
        {
            services.AddSingleton(typeof(IServiceMethodProvider<>), typeof(StrictServiceMethodProvider<>));
        }
        return services;
    }

    /// <summary>The marshaller with a deserializer that answers a malformed message INVALID_ARGUMENT.</summary>
    internal static Marshaller<T> Strict<T>(Marshaller<T> inner) => new(inner.ContextualSerializer, context =>
    {
        try
        {
            return inner.ContextualDeserializer(context);
        }
        catch (InvalidProtocolBufferException ex)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, $"The request message is malformed: {ex.Message}",
                Details.ErrorInfo("MALFORMED_REQUEST", "grpc.conduit"));
        }
    });
}

/// <summary>Binds a generated service's methods with <see cref="StrictParsing.Strict{T}"/> request marshallers.</summary>
public sealed class StrictServiceMethodProvider<TService> : IServiceMethodProvider<TService> where TService : class
{
    public void OnServiceMethodDiscovery(ServiceMethodProviderContext<TService> context)
    {
        ArgumentNullException.ThrowIfNull(context);
        for (var type = typeof(TService); type is not null; type = type.BaseType)
        {
            if (type.GetCustomAttribute<BindServiceMethodAttribute>(inherit: false) is not { } bind) continue;
            var method = bind.BindType.GetMethod(bind.BindMethodName, BindingFlags.Public | BindingFlags.Static, [typeof(ServiceBinderBase), type])
                ?? throw new InvalidOperationException($"{bind.BindType}.{bind.BindMethodName} not found for gRPC service {typeof(TService).Name}.");
            method.Invoke(null, [new Binder(context, type), null]);
            return;
        }
    }

    private sealed class Binder(ServiceMethodProviderContext<TService> context, Type declaringType) : ServiceBinderBase
    {
        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, UnaryServerMethod<TRequest, TResponse>? handler) =>
            context.AddUnaryMethod(Strict(method), Metadata(method.Name, out var handlerMethod, typeof(TRequest), typeof(ServerCallContext)),
                handlerMethod.CreateDelegate<UnaryServerMethod<TService, TRequest, TResponse>>());

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ClientStreamingServerMethod<TRequest, TResponse>? handler) =>
            context.AddClientStreamingMethod(Strict(method), Metadata(method.Name, out var handlerMethod, typeof(IAsyncStreamReader<TRequest>), typeof(ServerCallContext)),
                handlerMethod.CreateDelegate<ClientStreamingServerMethod<TService, TRequest, TResponse>>());

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ServerStreamingServerMethod<TRequest, TResponse>? handler) =>
            context.AddServerStreamingMethod(Strict(method), Metadata(method.Name, out var handlerMethod, typeof(TRequest), typeof(IServerStreamWriter<TResponse>), typeof(ServerCallContext)),
                handlerMethod.CreateDelegate<ServerStreamingServerMethod<TService, TRequest, TResponse>>());

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, DuplexStreamingServerMethod<TRequest, TResponse>? handler) =>
            context.AddDuplexStreamingMethod(Strict(method), Metadata(method.Name, out var handlerMethod, typeof(IAsyncStreamReader<TRequest>), typeof(IServerStreamWriter<TResponse>), typeof(ServerCallContext)),
                handlerMethod.CreateDelegate<DuplexStreamingServerMethod<TService, TRequest, TResponse>>());

        private static Method<TRequest, TResponse> Strict<TRequest, TResponse>(Method<TRequest, TResponse> method) where TRequest : class where TResponse : class =>
            new(method.Type, method.ServiceName, method.Name, StrictParsing.Strict(method.RequestMarshaller), method.ResponseMarshaller);

        /// <summary>
        /// The handler: the public override of the generated base's virtual method (the base's own,
        /// which answers UNIMPLEMENTED, when the service does not override it); its metadata: the
        /// service's attributes, the handler's, and POST only.
        /// </summary>
        private List<object> Metadata(string name, out MethodInfo handler, params Type[] parameters)
        {
            handler = typeof(TService).GetMethod(name, BindingFlags.Public | BindingFlags.Instance, parameters) is { IsVirtual: true } found
                && found.GetBaseDefinition().DeclaringType == declaringType
                ? found
                : throw new InvalidOperationException($"Could not find '{name}' on {typeof(TService)}.");
            var metadata = new List<object>();
            metadata.AddRange(typeof(TService).GetCustomAttributes(inherit: true));
            metadata.AddRange(handler.GetCustomAttributes(inherit: true));
            metadata.Add(new HttpMethodMetadata(["POST"], acceptCorsPreflight: true));
            return metadata;
        }
    }
}
