using System.Runtime.CompilerServices;

namespace Conduit.Rpc.Client;

/// <summary>What every call object offers: response headers, and status and trailers once it is over.</summary>
internal interface IClientCallState
{
    Task<Metadata> ResponseHeadersAsync { get; }

    Status GetStatus();

    Metadata GetTrailers();

    /// <summary>Cancels the call if it is still running and frees its resources.</summary>
    void DisposeCall();
}

/// <summary>A unary call: await it for the response.</summary>
public sealed class AsyncUnaryCall<TResponse> : IDisposable
{
    private readonly IClientCallState _call;

    internal AsyncUnaryCall(IClientCallState call, Task<TResponse> response)
    {
        _call = call;
        ResponseAsync = response;
    }

    public Task<TResponse> ResponseAsync { get; }

    public Task<Metadata> ResponseHeadersAsync => _call.ResponseHeadersAsync;

    public TaskAwaiter<TResponse> GetAwaiter() => ResponseAsync.GetAwaiter();

    /// <summary>The final status; only once the call is over.</summary>
    public Status GetStatus() => _call.GetStatus();

    /// <summary>The trailers; only once the call is over.</summary>
    public Metadata GetTrailers() => _call.GetTrailers();

    /// <summary>Cancels the call if it is still running and frees its resources.</summary>
    public void Dispose() => _call.DisposeCall();
}

/// <summary>A server-streaming call: read <see cref="ResponseStream"/> with await foreach.</summary>
public sealed class AsyncServerStreamingCall<TResponse> : IDisposable
{
    private readonly IClientCallState _call;

    internal AsyncServerStreamingCall(IClientCallState call, IAsyncStreamReader<TResponse> responseStream)
    {
        _call = call;
        ResponseStream = responseStream;
    }

    public IAsyncStreamReader<TResponse> ResponseStream { get; }

    public Task<Metadata> ResponseHeadersAsync => _call.ResponseHeadersAsync;

    public Status GetStatus() => _call.GetStatus();

    public Metadata GetTrailers() => _call.GetTrailers();

    public void Dispose() => _call.DisposeCall();
}

/// <summary>A client-streaming call: write to <see cref="RequestStream"/>, complete it, await the response.</summary>
public sealed class AsyncClientStreamingCall<TRequest, TResponse> : IDisposable
{
    private readonly IClientCallState _call;

    internal AsyncClientStreamingCall(IClientCallState call, IClientStreamWriter<TRequest> requestStream, Task<TResponse> response)
    {
        _call = call;
        RequestStream = requestStream;
        ResponseAsync = response;
    }

    public IClientStreamWriter<TRequest> RequestStream { get; }

    public Task<TResponse> ResponseAsync { get; }

    public Task<Metadata> ResponseHeadersAsync => _call.ResponseHeadersAsync;

    public TaskAwaiter<TResponse> GetAwaiter() => ResponseAsync.GetAwaiter();

    public Status GetStatus() => _call.GetStatus();

    public Metadata GetTrailers() => _call.GetTrailers();

    public void Dispose() => _call.DisposeCall();
}

/// <summary>A bidirectional call: write to <see cref="RequestStream"/> while reading <see cref="ResponseStream"/>.</summary>
public sealed class AsyncDuplexStreamingCall<TRequest, TResponse> : IDisposable
{
    private readonly IClientCallState _call;

    internal AsyncDuplexStreamingCall(IClientCallState call, IClientStreamWriter<TRequest> requestStream, IAsyncStreamReader<TResponse> responseStream)
    {
        _call = call;
        RequestStream = requestStream;
        ResponseStream = responseStream;
    }

    public IClientStreamWriter<TRequest> RequestStream { get; }

    public IAsyncStreamReader<TResponse> ResponseStream { get; }

    public Task<Metadata> ResponseHeadersAsync => _call.ResponseHeadersAsync;

    public Status GetStatus() => _call.GetStatus();

    public Metadata GetTrailers() => _call.GetTrailers();

    public void Dispose() => _call.DisposeCall();
}
