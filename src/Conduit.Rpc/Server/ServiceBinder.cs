namespace Conduit.Rpc.Server;

public delegate Task<TResponse> UnaryServerMethod<TService, TRequest, TResponse>(TService service, TRequest request, ServerCallContext context);

public delegate Task<TResponse> ClientStreamingServerMethod<TService, TRequest, TResponse>(TService service, IAsyncStreamReader<TRequest> requests, ServerCallContext context);

public delegate Task ServerStreamingServerMethod<TService, TRequest, TResponse>(TService service, TRequest request, IServerStreamWriter<TResponse> responses, ServerCallContext context);

public delegate Task DuplexStreamingServerMethod<TService, TRequest, TResponse>(TService service, IAsyncStreamReader<TRequest> requests, IServerStreamWriter<TResponse> responses, ServerCallContext context);

/// <summary>
/// Marks the static method of a generated service base class that binds its RPCs:
/// <c>static void BindService&lt;TService&gt;(ServiceBinder&lt;TService&gt; binder)</c>.
/// </summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class RpcServiceBinderAttribute : Attribute
{
}

/// <summary>Collects the methods of one service; generated code calls it, users rarely do.</summary>
public sealed class ServiceBinder<TService> where TService : class
{
    internal List<IServerMethod> Methods { get; } = new();

    // The call object is the handler's context, its request stream and its response stream.

    public void AddUnaryMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, UnaryServerMethod<TService, TRequest, TResponse> handler) =>
        Methods.Add(new ServerMethod<TService, TRequest, TResponse>(method, async (call, service) =>
        {
            var request = await call.ReadSingleRequestAsync().ConfigureAwait(false);
            var response = await handler(service, request, call).ConfigureAwait(false);
            await call.WriteAsync(response).ConfigureAwait(false);
        }));

    public void AddClientStreamingMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ClientStreamingServerMethod<TService, TRequest, TResponse> handler) =>
        Methods.Add(new ServerMethod<TService, TRequest, TResponse>(method, async (call, service) =>
        {
            var response = await handler(service, call, call).ConfigureAwait(false);
            await call.WriteAsync(response).ConfigureAwait(false);
        }));

    public void AddServerStreamingMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ServerStreamingServerMethod<TService, TRequest, TResponse> handler) =>
        Methods.Add(new ServerMethod<TService, TRequest, TResponse>(method, async (call, service) =>
        {
            var request = await call.ReadSingleRequestAsync().ConfigureAwait(false);
            await handler(service, request, call, call).ConfigureAwait(false);
        }));

    public void AddDuplexStreamingMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, DuplexStreamingServerMethod<TService, TRequest, TResponse> handler) =>
        Methods.Add(new ServerMethod<TService, TRequest, TResponse>(method, (call, service) =>
            handler(service, call, call, call)));
}
