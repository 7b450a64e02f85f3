using System.Text.RegularExpressions;
using Conduit.Grpc;
using Grpc.Reflection.V1;

namespace Conduit.Web.Tests;

/// <summary>Server reflection (v1 and v1alpha), as `buf curl --reflect` uses it: no .proto file anywhere.</summary>
public class ReflectionTests
{
    /// <summary>buf from npm (@bufbuild/buf), installed by scripts/test.sh; missing, the tests fail.</summary>
    private static string Buf
    {
        get
        {
            var path = Path.Combine(Paths.RepoRoot, ".cache", "tools", "node_modules", ".bin", "buf");
            Assert.True(File.Exists(path), $"{path} is missing: scripts/test.sh installs it (npm install --prefix .cache/tools @bufbuild/buf)");
            return path;
        }
    }

    private static async Task<string> BufCurl(InProcessServer server, params string[] args)
    {
        var result = await ChildProcess.Run(Buf, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--timeout", "20s", .. args]);
        Assert.True(result.ExitCode == 0, $"buf curl {string.Join(' ', args)}: exit {result.ExitCode}\n{result.Errors}{result.Output}");
        return result.Output;
    }

    [Theory]
    [InlineData("grpc-v1")]
    [InlineData("grpc-v1alpha")]
    public async Task Buf_curl_lists_every_service_and_method(string protocol)
    {
        await using var server = await Servers.Full();
        var services = await BufCurl(server, "--reflect-protocol", protocol, "--list-services", server.Address);
        Assert.Equal(GrpcCalls.ServiceNames(server.Services).Order(StringComparer.Ordinal), services.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        var methods = (await BufCurl(server, "--reflect-protocol", protocol, "--list-methods", server.Address)).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        foreach (var method in new[] { "helloworld.Greeter/SayHello", "log.v1.Log/ConsumeStream", "user.UserService/GetUser", "rpc.Cache/Dump", "proto.Chat/ChatStream", "grpc.health.v1.Health/Watch" })
        {
            Assert.Contains(method, methods);
        }
    }

    [Fact]
    public async Task Buf_curl_calls_the_greeter_the_log_and_the_users_without_proto_files()
    {
        await using var server = await Servers.Full();
        var url = server.Address;
        Assert.Equal("{\n  \"message\": \"Hello buf\"\n}\n", await BufCurl(server, "-d", """{"name":"buf"}""", url + "/helloworld.Greeter/SayHello"));

        await BufCurl(server, "-d", """{"topic":"reflect","record":{"value":"Zmlyc3Q="}}""", url + "/log.v1.Log/Produce");
        Assert.Contains("\"offset\": \"1\"", await BufCurl(server, "-d", """{"topic":"reflect","record":{"value":"c2Vjb25k"}}""", url + "/log.v1.Log/Produce"));
        Assert.Contains("\"value\": \"c2Vjb25k\"", await BufCurl(server, "--reflect-protocol", "grpc-v1alpha", "-d", """{"topic":"reflect","offset":1}""", url + "/log.v1.Log/Consume"));

        // A client stream (two messages in -d) and a server stream, then the seed's own contract.
        Assert.Contains("\"count\": 2", await BufCurl(server, "-d", """{"name":"Ann","email":"ann@example.com"} {"name":"Bob","email":"bob@example.com"}""", url + "/user.v1.UserService/CreateUsers"));
        var listed = await BufCurl(server, "-d", "{}", url + "/user.v1.UserService/ListUsers");
        Assert.Equal(["Ann", "Bob"], Regex.Matches(listed, "\"name\": \"(\\w+)\"").Select(m => m.Groups[1].Value));
        Assert.Contains("\"email\": \"bob@example.com\"", await BufCurl(server, "-d", """{"id":2}""", url + "/user.UserService/GetUser"));
        Assert.Contains("\"status\": \"SERVING\"", await BufCurl(server, "-d", """{"service":"log.v1.Log"}""", url + "/grpc.health.v1.Health/Check"));
    }

    [Fact]
    public async Task Reflection_describes_the_rich_error_details_that_no_service_file_imports()
    {
        await using var server = await Servers.Full();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using var call = new ServerReflection.ServerReflectionClient(server.Channel).ServerReflectionInfo(cancellationToken: cts.Token);
        foreach (var symbol in new[] { "google.rpc.BadRequest", "google.rpc.RetryInfo", "google.rpc.Status", "rpc.Cache", "user.UserService" })
        {
            await call.RequestStream.WriteAsync(new ServerReflectionRequest { FileContainingSymbol = symbol });
            Assert.True(await call.ResponseStream.MoveNext(cts.Token));
            var answer = call.ResponseStream.Current;
            Assert.True(answer.MessageResponseCase == ServerReflectionResponse.MessageResponseOneofCase.FileDescriptorResponse, $"{symbol}: {answer.ErrorResponse}");
        }
        await call.RequestStream.CompleteAsync();
    }
}
