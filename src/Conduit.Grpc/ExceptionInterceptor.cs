using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Conduit.Grpc;

/// <summary>
/// Turns an exception a handler lets escape into the status a client should see. Each service
/// registers mappers for its own failures (storage, database, backends) in DI; the first mapper
/// that answers wins. An <see cref="RpcException"/> passes as it is; an exception no mapper knows
/// stays UNKNOWN (grpc-dotnet's own behaviour, with no internals on the wire).
/// </summary>
public interface IExceptionMapper
{
    /// <summary>The exception to end the call with instead of <paramref name="exception"/>, or null.</summary>
    RpcException? Map(Exception exception, ServerCallContext context);
}

/// <summary>Runs the registered <see cref="IExceptionMapper"/>s for every call kind.</summary>
public sealed class ExceptionInterceptor(IEnumerable<IExceptionMapper> mappers) : Interceptor
{
    private readonly IExceptionMapper[] _mappers = [.. mappers];

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        Task<TResponse> task;
        try
        {
            task = continuation(request, context);
        }
        catch (Exception ex) when (Map(ex, context) is { } mapped)
        {
            return Task.FromException<TResponse>(mapped);
        }
        return task.IsCompletedSuccessfully ? task : Awaited(task, context);
    }

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Task<TResponse> task;
        try
        {
            task = continuation(requestStream, context);
        }
        catch (Exception ex) when (Map(ex, context) is { } mapped)
        {
            return Task.FromException<TResponse>(mapped);
        }
        return task.IsCompletedSuccessfully ? task : Awaited(task, context);
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Task task;
        try
        {
            task = continuation(request, responseStream, context);
        }
        catch (Exception ex) when (Map(ex, context) is { } mapped)
        {
            return Task.FromException(mapped);
        }
        return task.IsCompletedSuccessfully ? task : Awaited(task, context);
    }

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Task task;
        try
        {
            task = continuation(requestStream, responseStream, context);
        }
        catch (Exception ex) when (Map(ex, context) is { } mapped)
        {
            return Task.FromException(mapped);
        }
        return task.IsCompletedSuccessfully ? task : Awaited(task, context);
    }

    private async Task<T> Awaited<T>(Task<T> task, ServerCallContext context)
    {
        try
        {
            return await task.ConfigureAwait(false);
        }
        catch (Exception ex) when (Map(ex, context) is { } mapped)
        {
            throw mapped;
        }
    }

    private async Task Awaited(Task task, ServerCallContext context)
    {
        try
        {
            await task.ConfigureAwait(false);
        }
        catch (Exception ex) when (Map(ex, context) is { } mapped)
        {
            throw mapped;
        }
    }

    private RpcException? Map(Exception exception, ServerCallContext context)
    {
        if (exception is RpcException) return null;
        foreach (var mapper in _mappers)
        {
            if (mapper.Map(exception, context) is { } mapped) return mapped;
        }
        return null;
    }
}
