using System.Text.Json;
using Conduit.Protos.HelloWorld;

namespace Conduit.Observability.Tests;

/// <summary>The server's per-call line as JSON, and the client's wire log, through the real executable.</summary>
public class LogTests
{
    [Fact]
    public async Task With_log_format_json_each_call_is_one_JSON_line_with_its_fields()
    {
        using var data = new TempDir("conduit-obs-json-");
        await using var server = ChildProcess.Conduit("serve", "--urls", "http://127.0.0.1:0", "--data", data.Path, "--log-format", "json", "--log-level", "debug");
        var address = (await server.WaitForLine(@"listening on (http://127\.0\.0\.1:\d+)")).Groups[1].Value;
        using var channel = ConduitChannel.ForAddress(address);
        await new Greeter.GreeterClient(channel).SayHelloAsync(new HelloRequest { Name = "json" }, new CallOptions().WithTimeout(TimeSpan.FromSeconds(30)));

        var line = (await server.WaitForLine(@"^\{.*""Category"":""Conduit\.Grpc\.LoggingInterceptor"".*SayHello.*$")).Value;
        using var json = JsonDocument.Parse(line);
        var root = json.RootElement;
        Assert.Equal("Debug", root.GetProperty("LogLevel").GetString());
        var state = root.GetProperty("State");
        Assert.Equal("/helloworld.Greeter/SayHello", state.GetProperty("Method").GetString());
        Assert.StartsWith("ipv4:127.0.0.1:", state.GetProperty("Peer").GetString(), StringComparison.Ordinal);
        Assert.Equal("-", state.GetProperty("Principal").GetString());
        Assert.True(state.GetProperty("ElapsedMs").GetDouble() > 0);
        Assert.Equal(new HelloRequest { Name = "json" }.CalculateSize(), state.GetProperty("RequestBytes").GetInt64());
        Assert.Equal(new HelloReply { Message = "Hello json" }.CalculateSize(), state.GetProperty("ResponseBytes").GetInt64());
    }

    [Fact]
    public async Task CONDUIT_CLIENT_LOG_trace_writes_the_client_s_call_and_wire_log_on_stderr()
    {
        await using var server = await ObservedServer.StartAsync();
        await using var client = ChildProcess.Conduit(new Dictionary<string, string> { ["CONDUIT_CLIENT_LOG"] = "trace" }, "hello", "wire", "--server", server.Address);
        client.StandardInput.Close();
        Assert.Equal(0, await client.WaitForExit(TimeSpan.FromSeconds(60)));
        Assert.Equal("Hello wire\n", client.Output);
        var errors = client.Errors;
        // Grpc.Net.Client's own log of the call, and SocketsHttpHandler's HTTP/2 frames under it.
        Assert.Contains("dbug: Grpc.Net.Client.Internal.GrpcCall[1] Starting gRPC call. Method type: 'Unary'", errors, StringComparison.Ordinal);
        Assert.Contains("System.Net.Http RequestStart", errors, StringComparison.Ordinal);
        Assert.Contains("Wrote HEADERS frame", errors, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Without_CONDUIT_CLIENT_LOG_a_command_writes_nothing_on_stderr()
    {
        await using var server = await ObservedServer.StartAsync();
        await using var client = ChildProcess.Conduit("hello", "quiet", "--server", server.Address);
        client.StandardInput.Close();
        Assert.Equal(0, await client.WaitForExit(TimeSpan.FromSeconds(60)));
        Assert.Equal("", client.Errors);
    }
}
