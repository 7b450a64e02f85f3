using System.Security.Claims;
using System.Text.Json;
using Conduit.Grpc.Tests;
using Conduit.Protos.HelloWorld;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

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
    public async Task The_per_call_line_names_the_authenticated_principal()
    {
        var log = new CapturingLogger();
        await using var server = await ObservedServer.StartAsync(
            services: s => s.AddLogging(l => l.AddProvider(log).SetMinimumLevel(LogLevel.Debug)),
            // Stands for an authentication handler: whoever sets HttpContext.User.
            map: a => a.Use((http, next) =>
            {
                http.User = new ClaimsPrincipal(new ClaimsIdentity([new Claim(ClaimTypes.Name, "ann")], "test"));
                return next(http);
            }));
        await new Greeter.GreeterClient(server.Channel).SayHelloAsync(new HelloRequest { Name = "who" }, new CallOptions().WithTimeout(TimeSpan.FromSeconds(30)));
        var line = await log.WaitFor(e => e.Category == "Conduit.Grpc.LoggingInterceptor" && e.Message.Contains("SayHello", StringComparison.Ordinal));
        Assert.Equal("ann", line.Field("Principal"));
        Assert.Contains(" principal=ann ", line.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Log_level_trace_shows_http2_frames_connections_and_request_headers()
    {
        using var data = new TempDir("conduit-obs-trace-");
        await using var server = ChildProcess.Conduit("serve", "--urls", "http://127.0.0.1:0", "--data", data.Path, "--log-level", "trace");
        var address = (await server.WaitForLine(@"listening on (http://127\.0\.0\.1:\d+)")).Groups[1].Value;
        using (var channel = ConduitChannel.ForAddress(address))
        {
            var headers = new Metadata { { "x-request-id", "trace-me" }, { "authorization", "Bearer secret-token" } };
            await new Greeter.GreeterClient(channel).SayHelloAsync(new HelloRequest { Name = "wire" }, new CallOptions(headers).WithTimeout(TimeSpan.FromSeconds(30)));
        }
        await server.WaitForLine(@"trce: Microsoft\.AspNetCore\.Server\.Kestrel\.Http2\[\d+\] Connection id "".+"" received HEADERS frame for stream ID 1");
        await server.WaitForLine(@"sending DATA frame for stream ID 1");
        await server.WaitForLine(@"dbug: Microsoft\.AspNetCore\.Server\.Kestrel\.Connections\[\d+\] Connection id "".+"" accepted");
        var started = (await server.WaitForLine(@"trce: Conduit\.Grpc\.LoggingInterceptor\[3\] /helloworld\.Greeter/SayHello started .*$")).Value;
        Assert.Contains("x-request-id=trace-me", started, StringComparison.Ordinal);
        Assert.Contains("authorization=<hidden>", started, StringComparison.Ordinal);
        Assert.DoesNotContain("secret-token", server.Output, StringComparison.Ordinal);
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
