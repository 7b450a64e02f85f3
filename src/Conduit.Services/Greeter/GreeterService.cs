using Conduit.Grpc;
using Conduit.Protos.HelloWorld;
using Grpc.Core;

namespace Conduit.Services.Greeter;

/// <summary>helloworld.Greeter: the canonical example service of every gRPC language.</summary>
public sealed class GreeterService : Protos.HelloWorld.Greeter.GreeterBase
{
    public override Task<HelloReply> SayHello(HelloRequest request, ServerCallContext context) =>
        Task.FromResult(new HelloReply { Message = "Hello " + request.Name });
}
