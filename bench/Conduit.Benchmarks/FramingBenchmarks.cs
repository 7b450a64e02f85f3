using System.Buffers;
using System.IO.Pipelines;
using BenchmarkDotNet.Attributes;
using Conduit.Protos.HelloWorld;
using Conduit.Rpc;
using Conduit.Rpc.Wire;

namespace Conduit.Benchmarks;

/// <summary>
/// The per-message work of the SayHello path: framing and (de)serializing a request and a reply
/// through pipes, as the server does. The memory diagnoser shows what each message allocates:
/// the framing itself must add nothing beyond the message objects.
/// </summary>
[MemoryDiagnoser]
public class FramingBenchmarks
{
    private static readonly Marshaller<HelloRequest> RequestMarshaller = Marshallers.Protobuf(HelloRequest.Parser);
    private static readonly Marshaller<HelloReply> ReplyMarshaller = Marshallers.Protobuf(HelloReply.Parser);
    private readonly HelloReply _reply = new() { Message = "Hello bench" };
    private readonly Pipe _pipe = new(new PipeOptions(pauseWriterThreshold: 0, useSynchronizationContext: false));
    private byte[] _requestFrame = [];
    private ArrayBufferWriter<byte> _output = new();

    [GlobalSetup]
    public void Setup()
    {
        var writer = new ArrayBufferWriter<byte>();
        MessageFraming.WriteMessage(writer, new HelloRequest { Name = "bench" }, RequestMarshaller, null, int.MaxValue);
        _requestFrame = writer.WrittenSpan.ToArray();
        _output = new ArrayBufferWriter<byte>(1024);
    }

    /// <summary>Writing one framed reply into a buffer writer (what the server does per response).</summary>
    [Benchmark]
    public int WriteReplyFrame()
    {
        _output.ResetWrittenCount();
        MessageFraming.WriteMessage(_output, _reply, ReplyMarshaller, null, int.MaxValue);
        return _output.WrittenCount;
    }

    /// <summary>Reading one framed request from a pipe (what the server does per request): allocates the message only.</summary>
    [Benchmark]
    public async ValueTask<string> ReadRequestFrame()
    {
        await _pipe.Writer.WriteAsync(_requestFrame);
        var result = await MessageFraming.ReadMessageAsync(_pipe.Reader, RequestMarshaller, null, 4 * 1024 * 1024, "request", default);
        return result.Message.Name;
    }

    /// <summary>For scale: the protobuf parse alone.</summary>
    [Benchmark(Baseline = true)]
    public string ParseRequestOnly() => HelloRequest.Parser.ParseFrom(new ReadOnlySequence<byte>(_requestFrame, 5, _requestFrame.Length - 5)).Name;
}
