// A minimal grpc-dotnet Greeter: the ceiling for a service on this stack, measured beside
// `conduit serve` by bench/compare.sh. AddGrpc + MapGrpcService<Greeter> with every grpc-dotnet
// default (the service is not registered in DI, so grpc-dotnet activates one per call), nothing
// else mapped, no interceptors, no logging providers. h2c on 127.0.0.1.
//   dotnet bench/MinimalGreeter/bin/Release/net10.0/MinimalGreeter.dll --port 50092
using Conduit.Protos.HelloWorld;
using Grpc.Core;
using Microsoft.AspNetCore.Server.Kestrel.Core;

var port = args.Length >= 2 && args[0] == "--port" ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 50092;
var builder = WebApplication.CreateSlimBuilder(args);
builder.Logging.ClearProviders();
builder.WebHost.ConfigureKestrel(k => k.Listen(System.Net.IPAddress.Loopback, port, o => o.Protocols = HttpProtocols.Http2));
builder.Services.AddGrpc();
var app = builder.Build();
app.MapGrpcService<GreeterService>();
app.Run();

internal sealed class GreeterService : Greeter.GreeterBase
{
    public override Task<HelloReply> SayHello(HelloRequest request, ServerCallContext context) =>
        Task.FromResult(new HelloReply { Message = "Hello " + request.Name });
}
