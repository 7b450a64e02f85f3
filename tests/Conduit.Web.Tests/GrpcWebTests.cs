using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Conduit.Grpc;
using Conduit.Protos.HelloWorld;
using Conduit.Protos.Log.V1;
using Conduit.Protos.User.V1;
using Google.Protobuf;
using Google.Rpc;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Grpc.Net.Client;
using Grpc.Net.Client.Web;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Web.Tests;

/// <summary>gRPC-Web (binary and text) on the HTTP/1.1 web listener, CORS, and the page's files.</summary>
public class GrpcWebTests
{
    private static GrpcChannel WebChannel(InProcessServer server, GrpcWebMode mode) =>
        GrpcChannel.ForAddress(Servers.WebAddress(server), new GrpcChannelOptions
        {
            HttpHandler = new GrpcWebHandler(mode, new HttpClientHandler()),
            HttpVersion = HttpVersion.Version11,
            HttpVersionPolicy = HttpVersionPolicy.RequestVersionExact,
        });

    [Theory]
    [InlineData(GrpcWebMode.GrpcWeb)]
    [InlineData(GrpcWebMode.GrpcWebText)]
    public async Task A_grpc_web_client_over_http_1_1_calls_unary_and_server_streaming_methods_and_gets_error_details(GrpcWebMode mode)
    {
        await using var server = await Servers.Full(web: true);
        using var channel = WebChannel(server, mode);
        var deadline = DateTime.UtcNow.AddSeconds(30);

        var reply = await new Greeter.GreeterClient(channel).SayHelloAsync(new HelloRequest { Name = "web" }, deadline: deadline);
        Assert.Equal("Hello web", reply.Message);

        var log = new Log.LogClient(server.Channel); // produced over h2c, consumed over gRPC-Web
        foreach (var value in new[] { "one", "two" })
        {
            await log.ProduceAsync(new ProduceRequest { Topic = "web", Record = new Protos.Log.V1.Record { Value = ByteString.CopyFromUtf8(value) } }, deadline: deadline);
        }
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using var stream = new Log.LogClient(channel).ConsumeStream(new ConsumeRequest { Topic = "web" }, cancellationToken: cts.Token);
        var seen = new List<string>();
        while (seen.Count < 2 && await stream.ResponseStream.MoveNext(cts.Token)) seen.Add(stream.ResponseStream.Current.Record.Value.ToStringUtf8());
        Assert.Equal(["one", "two"], seen);

        var missing = await Assert.ThrowsAsync<RpcException>(async () =>
            await new UserService.UserServiceClient(channel).GetUserAsync(new GetUserRequest { Id = 42 }, deadline: deadline));
        Assert.Equal(StatusCode.NotFound, missing.StatusCode);
        Assert.Equal("USER_NOT_FOUND", missing.GetDetail<ErrorInfo>()?.Reason);
    }

    [Fact]
    public async Task Every_unary_and_server_streaming_method_answers_grpc_web_with_a_grpc_status()
    {
        await using var server = await Servers.Full(web: true);
        var methods = server.Services.GetRequiredService<EndpointDataSource>().Endpoints
            .Select(e => e.Metadata.GetMetadata<GrpcMethodMetadata>()?.Method)
            .OfType<IMethod>().Where(m => m.Type is MethodType.Unary or MethodType.ServerStreaming).ToList();
        Assert.True(methods.Count > 20, string.Join(", ", methods.Select(m => m.FullName)));
        using var http = new HttpClient { BaseAddress = new Uri(Servers.WebAddress(server)) };
        var answers = await Task.WhenAll(methods.Select(async method =>
        {
            // An empty message; a stream that would go on (a follower, Watch) ends at the deadline.
            using var request = new HttpRequestMessage(HttpMethod.Post, method.FullName) { Version = HttpVersion.Version11, Content = new ByteArrayContent(new byte[5]) };
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc-web+proto");
            request.Headers.Add("x-grpc-web", "1");
            request.Headers.Add("grpc-timeout", "500m");
            using var response = await http.SendAsync(request);
            return (method.FullName, response.StatusCode, response.Content.Headers.ContentType?.MediaType, Status: await GrpcStatus(response));
        }));
        foreach (var answer in answers)
        {
            Assert.True(answer is { StatusCode: HttpStatusCode.OK, MediaType: "application/grpc-web" }, answer.ToString());
            Assert.True(answer.Status is not (null or "12"), $"{answer.FullName}: grpc-status {answer.Status ?? "missing"}");
        }
    }

    [Fact]
    public async Task Without_cors_origins_no_other_origin_may_read_answers()
    {
        await using var server = await Servers.Full(web: true);
        using var http = new HttpClient { BaseAddress = new Uri(Servers.WebAddress(server)) };
        using var preflight = await http.SendAsync(Preflight("http://elsewhere.test"));
        Assert.False(preflight.Headers.Contains("Access-Control-Allow-Origin"));
        using var call = await http.SendAsync(SayHello("http://elsewhere.test"));
        Assert.Equal("0", await GrpcStatus(call)); // answered, but a browser keeps it from the page
        Assert.False(call.Headers.Contains("Access-Control-Allow-Origin"));
    }

    [Fact]
    public async Task A_configured_origin_passes_the_preflight_and_reads_the_status_headers()
    {
        await using var server = await Servers.Full(web: true, settings: new Dictionary<string, string?> { ["Conduit:Web:CorsOrigins:0"] = "http://page.test:8080" });
        using var http = new HttpClient { BaseAddress = new Uri(Servers.WebAddress(server)) };
        using var preflight = await http.SendAsync(Preflight("http://page.test:8080"));
        Assert.True(preflight.IsSuccessStatusCode, preflight.StatusCode.ToString());
        Assert.Equal("http://page.test:8080", Assert.Single(preflight.Headers.GetValues("Access-Control-Allow-Origin")));
        Assert.Contains("x-grpc-web", string.Join(",", preflight.Headers.GetValues("Access-Control-Allow-Headers")), StringComparison.OrdinalIgnoreCase);

        using var call = await http.SendAsync(SayHello("http://page.test:8080"));
        Assert.Equal("0", await GrpcStatus(call));
        Assert.Equal("http://page.test:8080", Assert.Single(call.Headers.GetValues("Access-Control-Allow-Origin")));
        Assert.Contains("grpc-status", string.Join(",", call.Headers.GetValues("Access-Control-Expose-Headers")));

        using var other = await http.SendAsync(Preflight("http://other.test"));
        Assert.False(other.Headers.Contains("Access-Control-Allow-Origin"));
    }

    [Fact]
    public async Task The_console_the_demo_page_and_their_scripts_are_served_from_the_executable()
    {
        await using var server = await Servers.Full(web: true);
        using var http = new HttpClient { BaseAddress = new Uri(Servers.WebAddress(server)) };
        using var console = await http.GetAsync("/");
        Assert.Equal("text/html", console.Content.Headers.ContentType?.MediaType);
        Assert.Contains("<script type=\"module\" src=\"/console.js\">", await console.Content.ReadAsStringAsync());
        using var bundle = await http.GetAsync("/console.js");
        Assert.Equal("text/javascript", bundle.Content.Headers.ContentType?.MediaType);
        // The bundle holds connect-web's gRPC-Web transport (the generated clients' descriptors are
        // embedded encoded, so no method name shows as text).
        Assert.Contains("application/grpc-web+proto", await bundle.Content.ReadAsStringAsync());
        using var page = await http.GetAsync("/demo");
        Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
        Assert.Contains("<script src=\"/demo.js\">", await page.Content.ReadAsStringAsync());
        using var script = await http.GetAsync("/demo.js");
        Assert.Equal("text/javascript", script.Content.Headers.ContentType?.MediaType);
        Assert.Contains("/log.v1.Log/ConsumeStream", await script.Content.ReadAsStringAsync());
    }

    private static HttpRequestMessage Preflight(string origin)
    {
        var request = new HttpRequestMessage(HttpMethod.Options, "/helloworld.Greeter/SayHello");
        request.Headers.Add("Origin", origin);
        request.Headers.Add("Access-Control-Request-Method", "POST");
        request.Headers.Add("Access-Control-Request-Headers", "content-type,x-grpc-web");
        return request;
    }

    private static HttpRequestMessage SayHello(string origin)
    {
        var message = new HelloRequest { Name = "cors" }.ToByteArray();
        var body = new byte[5 + message.Length];
        BinaryPrimitives.WriteUInt32BigEndian(body.AsSpan(1), (uint)message.Length);
        message.CopyTo(body, 5);
        var request = new HttpRequestMessage(HttpMethod.Post, "/helloworld.Greeter/SayHello") { Content = new ByteArrayContent(body) };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc-web+proto");
        request.Headers.Add("x-grpc-web", "1");
        request.Headers.Add("Origin", origin);
        return request;
    }

    /// <summary>grpc-status from the headers (trailers-only) or from the body's trailer frame (flag 0x80).</summary>
    private static async Task<string?> GrpcStatus(HttpResponseMessage response)
    {
        if (response.Headers.TryGetValues("grpc-status", out var values)) return values.First();
        var body = await response.Content.ReadAsByteArrayAsync();
        for (var i = 0; i + 5 <= body.Length;)
        {
            var length = (int)BinaryPrimitives.ReadUInt32BigEndian(body.AsSpan(i + 1));
            if ((body[i] & 0x80) != 0)
            {
                foreach (var line in Encoding.ASCII.GetString(body, i + 5, length).Split("\r\n"))
                {
                    if (line.StartsWith("grpc-status:", StringComparison.OrdinalIgnoreCase)) return line["grpc-status:".Length..].Trim();
                }
            }
            i += 5 + length;
        }
        return null;
    }
}
