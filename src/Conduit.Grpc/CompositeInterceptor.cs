using System.Collections.Concurrent;
using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Conduit.Grpc;

/// <summary>
/// Several interceptors as one grpc-dotnet interceptor registration, outermost first. Each
/// registration costs grpc-dotnet an async layer and a service lookup per call; a composite costs
/// one, and its chained handlers are built once per method (grpc-dotnet hands the same
/// continuation to every call of a method), so a call allocates nothing for the chaining.
/// </summary>
public class CompositeInterceptor : Interceptor
{
    private readonly Interceptor[] _interceptors;
    private readonly ConcurrentDictionary<Delegate, Delegate> _chains = new(ReferenceEqualityComparer.Instance);

    public CompositeInterceptor(IEnumerable<Interceptor> interceptors)
    {
        ArgumentNullException.ThrowIfNull(interceptors);
        _interceptors = [.. interceptors];
    }

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation) =>
        Chain(continuation, static (interceptor, next) => (r, c) => interceptor.UnaryServerHandler(r, c, next))(request, context);

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation) =>
        Chain(continuation, static (interceptor, next) => (s, c) => interceptor.ClientStreamingServerHandler(s, c, next))(requestStream, context);

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation) =>
        Chain(continuation, static (interceptor, next) => (r, w, c) => interceptor.ServerStreamingServerHandler(r, w, c, next))(request, responseStream, context);

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation) =>
        Chain(continuation, static (interceptor, next) => (s, w, c) => interceptor.DuplexStreamingServerHandler(s, w, c, next))(requestStream, responseStream, context);

    /// <summary>The handler that runs every interceptor around <paramref name="continuation"/>, built on first use.</summary>
    private TDelegate Chain<TDelegate>(TDelegate continuation, Func<Interceptor, TDelegate, TDelegate> wrap) where TDelegate : Delegate
    {
        if (_chains.TryGetValue(continuation, out var chained)) return (TDelegate)chained;
        var handler = continuation;
        for (var i = _interceptors.Length - 1; i >= 0; i--) handler = wrap(_interceptors[i], handler);
        return (TDelegate)_chains.GetOrAdd(continuation, handler);
    }
}
