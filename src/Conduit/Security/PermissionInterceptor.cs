using System.Collections.Concurrent;
using System.Security.Claims;
using Conduit.Grpc;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Conduit.Security;

/// <summary>
/// Checks every call against the <see cref="PermissionPolicy"/> before the service sees it:
/// UNAUTHENTICATED for a caller without identity, PERMISSION_DENIED for one without permission,
/// both with ErrorInfo. A request with a string field "topic" (the Log's; for log.v1.LogAdmin
/// also "name") is checked for that topic: unary and server-streaming calls before the handler
/// runs, client-streaming and duplex calls message by message as the handler reads them, unless
/// the caller may use every topic anyway. So no service method carries a check of its own.
/// </summary>
public sealed class PermissionInterceptor(PermissionPolicy policy) : Interceptor
{
    public const string Domain = "security.conduit";

    private readonly ConcurrentDictionary<string, CallShape> _shapes = new(StringComparer.Ordinal);

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        var shape = Shape<TRequest>(context);
        Check(context, shape, shape.TopicOf(request));
        return continuation(request, context);
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        var shape = Shape<TRequest>(context);
        Check(context, shape, shape.TopicOf(request));
        return continuation(request, responseStream, context);
    }

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation) =>
        continuation(Guard(requestStream, context), context);

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation) =>
        continuation(Guard(requestStream, context), responseStream, context);

    /// <summary>The request stream itself when the caller may use the method on every topic; otherwise one that checks each message's topic.</summary>
    private IAsyncStreamReader<TRequest> Guard<TRequest>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context)
    {
        var shape = Shape<TRequest>(context);
        var user = CallIdentity.User(context);
        if (policy.Allows(user, shape.Method, null)) return requestStream;
        if (shape.Topic is null || !policy.AllowsSomeTopic(user, shape.Method)) throw Denied(context, user, shape.Method, null);
        return new CheckedReader<TRequest>(requestStream, this, context, shape);
    }

    private void Check(ServerCallContext context, CallShape shape, string? topic)
    {
        var user = CallIdentity.User(context);
        if (!policy.Allows(user, shape.Method, topic)) throw Denied(context, user, shape.Method, topic);
    }

    private RpcException Denied(ServerCallContext context, ClaimsPrincipal user, string method, string? topic)
    {
        var on = topic is null ? "" : $" on topic '{PermissionPolicy.Shorten(topic)}'";
        if (user.Identity?.IsAuthenticated != true)
        {
            var failure = Principals.Failure(context.GetHttpContext());
            // Accounts could not check the token: that is for a retry to fix, not a missing identity.
            if (failure is { StatusCode: not StatusCode.Unauthenticated }) return failure;
            var why = failure is null ? "The call has no identity: send 'authorization: Bearer <token>' or a client certificate."
                : $"The call's identity was not accepted: {failure.Status.Detail}";
            return RpcException.WithDetails(StatusCode.Unauthenticated, $"{why} {method}{on} needs one.",
                Details.ErrorInfo(failure is null ? "IDENTITY_MISSING" : "IDENTITY_REJECTED", Domain, new Dictionary<string, string> { ["method"] = method }));
        }
        var name = user.Identity.Name ?? "";
        var metadata = new Dictionary<string, string> { ["principal"] = name, ["method"] = method };
        if (topic is not null) metadata["topic"] = PermissionPolicy.Shorten(topic);
        return RpcException.WithDetails(StatusCode.PermissionDenied, $"'{PermissionPolicy.Shorten(name)}' may not call {method}{on}.",
            Details.ErrorInfo("PERMISSION_DENIED", Domain, metadata));
    }

    private CallShape Shape<TRequest>(ServerCallContext context) =>
        _shapes.GetOrAdd(context.Method, static full => CallShape.For(full, typeof(TRequest)));

    /// <summary>A method's name without the leading '/', and its request's topic field, if any.</summary>
    private sealed record CallShape(string Method, FieldDescriptor? Topic)
    {
        public static CallShape For(string fullMethod, Type requestType)
        {
            var method = fullMethod.TrimStart('/');
            FieldDescriptor? topic = null;
            if (requestType.GetProperty("Descriptor", System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Static)?.GetValue(null) is MessageDescriptor descriptor)
            {
                topic = descriptor.FindFieldByName("topic")
                    ?? (method.StartsWith("log.v1.LogAdmin/", StringComparison.Ordinal) ? descriptor.FindFieldByName("name") : null);
                if (topic is { FieldType: not FieldType.String } or { IsRepeated: true }) topic = null;
            }
            return new CallShape(method, topic);
        }

        public string? TopicOf<TRequest>(TRequest request) => Topic is not null && request is IMessage message ? (string)Topic.Accessor.GetValue(message) : null;
    }

    private sealed class CheckedReader<TRequest>(IAsyncStreamReader<TRequest> inner, PermissionInterceptor owner, ServerCallContext context, CallShape shape) : IAsyncStreamReader<TRequest>
    {
        private string? _allowed;

        public TRequest Current => inner.Current;

        public async Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            if (!await inner.MoveNext(cancellationToken).ConfigureAwait(false)) return false;
            var topic = shape.TopicOf(inner.Current) ?? "";
            if (topic != _allowed)
            {
                owner.Check(context, shape, topic);
                _allowed = topic;
            }
            return true;
        }
    }
}
