namespace Conduit.Rpc.Client;

/// <summary>Starts calls. Generated clients call through one; interceptors wrap one.</summary>
public abstract class CallInvoker
{
    public abstract AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(Method<TRequest, TResponse> method, TRequest request, CallOptions options);

    public abstract AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, TRequest request, CallOptions options);

    public abstract AsyncClientStreamingCall<TRequest, TResponse> AsyncClientStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, CallOptions options);

    public abstract AsyncDuplexStreamingCall<TRequest, TResponse> AsyncDuplexStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, CallOptions options);
}

internal sealed class HttpCallInvoker(RpcChannel channel) : CallInvoker
{
    public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(Method<TRequest, TResponse> method, TRequest request, CallOptions options)
    {
        var call = new ClientCall<TRequest, TResponse>(channel, method);
        call.StartUnary(request, options, startResponse: false);
        return new AsyncUnaryCall<TResponse>(call, call.UnaryResponseAsync());
    }

    public override AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, TRequest request, CallOptions options)
    {
        var call = new ClientCall<TRequest, TResponse>(channel, method);
        call.StartUnary(request, options, startResponse: true);
        return new AsyncServerStreamingCall<TResponse>(call, call.ResponseStream);
    }

    public override AsyncClientStreamingCall<TRequest, TResponse> AsyncClientStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, CallOptions options)
    {
        var call = new ClientCall<TRequest, TResponse>(channel, method);
        call.StartStreaming(options);
        return new AsyncClientStreamingCall<TRequest, TResponse>(call, call.RequestStream, call.ReadUnaryResponseAsync());
    }

    public override AsyncDuplexStreamingCall<TRequest, TResponse> AsyncDuplexStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, CallOptions options)
    {
        var call = new ClientCall<TRequest, TResponse>(channel, method);
        call.StartStreaming(options);
        return new AsyncDuplexStreamingCall<TRequest, TResponse>(call, call.RequestStream, call.ResponseStream);
    }
}

/// <summary>The base of generated clients.</summary>
public abstract class ClientBase
{
    protected ClientBase(CallInvoker invoker) => Invoker = invoker ?? throw new ArgumentNullException(nameof(invoker));

    protected ClientBase(RpcChannel channel) : this(channel.Invoker) { }

    public CallInvoker Invoker { get; }
}
