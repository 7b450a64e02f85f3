using Conduit.Protos.Seeds.GrpcWithGo;
using Conduit.Services.Chat;
using Conduit.Services.Greeter;
using Grpc.Core;
using HelloWorld = Conduit.Protos.HelloWorld;
using V1 = Conduit.Protos.Chat.V1;

namespace Conduit.Services.Seeds;

/// <summary>
/// proto.Greeter of "gRPC with Go" (protos/seeds/grpc-with-go/greeter.proto): helloworld.Greeter's
/// SayHello under the seed's names (HelloResponse for HelloReply).
/// </summary>
public sealed class GrpcWithGoGreeterService(GreeterService greeter) : Protos.Seeds.GrpcWithGo.Greeter.GreeterBase
{
    public override async Task<HelloResponse> SayHello(HelloRequest request, ServerCallContext context)
    {
        var reply = await greeter.SayHello(new HelloWorld.HelloRequest { Name = request.Name }, context).ConfigureAwait(false);
        return new HelloResponse { Message = reply.Message };
    }
}

/// <summary>
/// proto.Chat of "gRPC with Go" (protos/seeds/grpc-with-go/chat.proto): chat.v1.Chat's ChatStream,
/// in the same rooms, so a seed client and a chat.v1 client in one room see each other's
/// messages. The seed's ChatMessage has no sent_unix_ms: its clients get user and text.
/// </summary>
public sealed class GrpcWithGoChatService(ChatService chat) : Protos.Seeds.GrpcWithGo.Chat.ChatBase
{
    public override Task ChatStream(IAsyncStreamReader<ChatMessage> requestStream, IServerStreamWriter<ChatMessage> responseStream, ServerCallContext context) =>
        chat.ChatStream(
            new MappedReader<ChatMessage, V1.ChatMessage>(requestStream, m => new V1.ChatMessage { User = m.User, Text = m.Text }),
            new MappedWriter<V1.ChatMessage, ChatMessage>(responseStream, m => new ChatMessage { User = m.User, Text = m.Text }),
            context);
}
