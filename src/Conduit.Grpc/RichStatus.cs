using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;

namespace Conduit.Grpc;

/// <summary>
/// Statuses with google.rpc details (BadRequest, QuotaFailure, ErrorInfo, RetryInfo, ...), sent in
/// the grpc-status-details-bin trailer by Grpc.StatusProto. Written as extensions of
/// <see cref="RpcException"/> so a handler says <c>throw RpcException.WithDetails(code, message, detail)</c>
/// and a client asks <c>ex.GetDetail&lt;RetryInfo&gt;()</c>.
/// </summary>
public static class RichStatus
{
    extension(RpcException)
    {
        /// <summary>An exception whose status carries <paramref name="details"/> as a google.rpc.Status.</summary>
        public static RpcException WithDetails(StatusCode code, string message, params IMessage[] details)
        {
            var status = new Google.Rpc.Status { Code = (int)code, Message = message };
            foreach (var detail in details) status.Details.Add(Any.Pack(detail));
            return status.ToRpcException();
        }
    }

    extension(RpcException exception)
    {
        /// <summary>The first detail of type <typeparamref name="T"/> the status carries, or null.</summary>
        public T? GetDetail<T>() where T : class, IMessage<T>, new() => exception.GetRpcStatus()?.GetDetail<T>();
    }
}
