using System.Buffers;
using Google.Protobuf;

namespace Conduit.Rpc;

/// <summary>The four kinds of RPC.</summary>
public enum MethodType
{
    Unary,
    ClientStreaming,
    ServerStreaming,
    DuplexStreaming,
}

/// <summary>Turns messages into bytes and back, straight to and from pooled buffers.</summary>
public sealed class Marshaller<T>
{
    public Marshaller(Action<T, IBufferWriter<byte>> serialize, Func<T, int> calculateSize, Func<ReadOnlySequence<byte>, T> deserialize)
    {
        Serialize = serialize;
        CalculateSize = calculateSize;
        Deserialize = deserialize;
    }

    public Action<T, IBufferWriter<byte>> Serialize { get; }

    public Func<T, int> CalculateSize { get; }

    public Func<ReadOnlySequence<byte>, T> Deserialize { get; }
}

public static class Marshallers
{
    /// <summary>The marshaller of a protobuf message type, given its parser.</summary>
    public static Marshaller<T> Protobuf<T>(MessageParser<T> parser) where T : IMessage<T> =>
        new(static (message, writer) => message.WriteTo(writer), static message => message.CalculateSize(), parser.ParseFrom);
}

/// <summary>Describes one RPC: its kind, its names and how its messages are marshalled.</summary>
public interface IMethod
{
    MethodType Type { get; }

    string ServiceName { get; }

    string Name { get; }

    /// <summary>The HTTP/2 path: "/package.Service/Method".</summary>
    string FullName { get; }
}

public sealed class Method<TRequest, TResponse> : IMethod
{
    public Method(MethodType type, string serviceName, string name, Marshaller<TRequest> requestMarshaller, Marshaller<TResponse> responseMarshaller)
    {
        Type = type;
        ServiceName = serviceName;
        Name = name;
        RequestMarshaller = requestMarshaller;
        ResponseMarshaller = responseMarshaller;
        FullName = "/" + serviceName + "/" + name;
    }

    public MethodType Type { get; }

    public string ServiceName { get; }

    public string Name { get; }

    public string FullName { get; }

    public Marshaller<TRequest> RequestMarshaller { get; }

    public Marshaller<TResponse> ResponseMarshaller { get; }

    public override string ToString() => FullName;
}
