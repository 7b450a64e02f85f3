using System.Net;
using Conduit.Grpc.Tests.Protos;
using Conduit.Hosting;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Conduit.Grpc.Tests;

/// <summary>
/// What a call that breaks a protocol rule gets (GrpcRequestChecks): a gRPC status before the
/// handler runs, never a bare HTTP error; the same from grpcio (C-core) as the client.
/// </summary>
public class RequestChecksTests : IAsyncLifetime
{
    private const string Unary = "/conduit.tests.Probe/Unary";
    private readonly ProbeScript _script = new();
    private readonly CapturingLogger _log = new();
    private TestHost _host = null!;

    public async Task InitializeAsync() => _host = await TestHost.StartAsync(
        services => services.AddSingleton(_script).AddSingleton<ProbeService>()
            .AddSingleton<IEarlyRejector, HeaderRejector>()
            .AddLogging(logging => logging.AddProvider(_log)),
        app => app.MapGrpcService<ProbeService>(), logLevel: LogLevel.Information);

    public async Task DisposeAsync() => await _host.DisposeAsync();

    private Task<RawResponse> CallAsync(string path = Unary, params (string Name, string Value)[] headers) =>
        _host.PostAsync(path, new ByteArrayContent(TestHost.Frame(new Msg { Text = "x" })), headers: headers);

    [Theory]
    [InlineData("0S")]
    [InlineData("1n")]
    [InlineData("99n")]
    [InlineData("0m")]
    public async Task A_grpc_timeout_that_already_ran_out_is_deadline_exceeded_and_the_handler_never_runs(string timeout)
    {
        var response = await CallAsync(headers: ("grpc-timeout", timeout));
        Assert.True(response.TrailersOnly);
        Assert.Equal("4", response.GrpcStatus);
        Assert.Equal(0, _script.Runs);
    }

    [Fact]
    public async Task A_grpc_timeout_with_time_left_runs_the_call()
    {
        var response = await CallAsync(headers: ("grpc-timeout", "5S"));
        Assert.Equal("0", response.GrpcStatus);
        Assert.Equal(1, _script.Runs);
    }

    [Theory]
    [InlineData("/conduit.tests.probe/Unary", "Service is unimplemented.")]
    [InlineData("/conduit.tests.Probe/unary", "Method is unimplemented.")]
    [InlineData("/CONDUIT.TESTS.PROBE/UNARY", "Service is unimplemented.")]
    public async Task Method_paths_are_case_sensitive(string path, string message)
    {
        var response = await CallAsync(path);
        Assert.Equal(200, response.HttpStatus);
        Assert.True(response.TrailersOnly);
        Assert.Equal("12", response.GrpcStatus);
        Assert.Equal(message, response.GrpcMessage);
        Assert.Equal(0, _script.Runs);
    }

    [Fact]
    public async Task Ninety_five_metadata_entries_are_fine()
    {
        var headers = Enumerable.Range(0, 95).Select(i => ($"x-m-{i}", "v")).ToArray();
        var response = await CallAsync(headers: headers);
        Assert.Equal(200, response.HttpStatus);
        Assert.Equal("0", response.GrpcStatus);
    }

    [Theory]
    [InlineData(1, 20_000)]
    [InlineData(600, 1)]
    public async Task Metadata_over_the_limit_is_resource_exhausted_and_logged_not_http_431(int entries, int valueLength)
    {
        var value = new string('a', valueLength);
        var headers = Enumerable.Range(0, entries).Select(i => ($"x-m-{i}", value)).ToArray();
        var response = await CallAsync(headers: headers);
        Assert.Equal(200, response.HttpStatus);
        Assert.Equal("8", response.GrpcStatus);
        Assert.Contains("over the server's limit of 16384 bytes", response.GrpcMessage, StringComparison.Ordinal);
        Assert.Equal(0, _script.Runs);
        Assert.Contains(_log.Entries, e => e.Level == LogLevel.Information && e.Message.Contains("RESOURCE_EXHAUSTED: metadata of", StringComparison.Ordinal));
    }

    [Fact]
    public async Task An_early_rejector_answers_before_the_handler_runs()
    {
        var counters = _host.Services.GetRequiredService<CallCounters>();
        var response = await CallAsync(headers: ("x-reject", "busy"));
        Assert.Equal(1, counters.Failed);
        Assert.True(response.TrailersOnly);
        Assert.Equal("14", response.GrpcStatus);
        Assert.Equal("rejected early: busy %E2%98%BA", response.GrpcMessage);
        Assert.Equal(0, _script.Runs);
        Assert.Equal("0", (await CallAsync()).GrpcStatus);
        Assert.Equal(1, _script.Runs);
    }

    /// <summary>Refuses calls carrying x-reject with UNAVAILABLE, quoting it; sees the method and the principal.</summary>
    private sealed class HeaderRejector : IEarlyRejector
    {
        public ValueTask<Status?> CheckAsync(EarlyCall call, CancellationToken cancellationToken)
        {
            Assert.Equal(Unary, call.Method);
            Assert.Equal("127.0.0.1", call.Principal);
            Assert.StartsWith("ipv4:127.0.0.1:", call.Peer, StringComparison.Ordinal);
            return ValueTask.FromResult<Status?>(call.Headers["x-reject"] is { Count: 1 } reason
                ? new Status(StatusCode.Unavailable, $"rejected early: {reason} ☺")
                : null);
        }
    }

    [Fact]
    public async Task A_grpcio_client_gets_statuses_for_duplicate_authorization_wrong_case_and_large_metadata()
    {
        var (code, output, errors) = await ChildProcess.Run(Paths.Python, Paths.PythonScript("conformance_client.py"),
            "--server", _host.Address.Replace("http://", "", StringComparison.Ordinal));
        Assert.True(code == 0, $"conformance_client.py failed (exit {code}):\n{output}\n{errors}");
        Assert.Equal("""
            plain OK
            two_authorization_headers UNAUTHENTICATED
            wrong_case_service UNIMPLEMENTED
            wrong_case_method UNIMPLEMENTED
            metadata_95_entries OK
            metadata_20k RESOURCE_EXHAUSTED

            """, output.Replace("\r", "", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Http1_on_a_tls_port_gets_a_clear_505_without_an_upgrade_hint()
    {
        using var dir = new TempDir();
        var (cert, key) = Conduit.Commands.SelfSigned.WritePem(dir.Path);
        await using var tls = await TestHost.StartAsync(
            services => services.AddSingleton(new ProbeScript()).AddSingleton<ProbeService>(),
            app => app.MapGrpcService<ProbeService>(),
            new ServeOptions { Urls = ["https://127.0.0.1:0"], TlsCert = cert, TlsKey = key });
        using var handler = new SocketsHttpHandler();
        handler.SslOptions.RemoteCertificateValidationCallback = (_, _, _, _) => true;
        using var http = new HttpClient(handler);
        using var content = new ByteArrayContent(TestHost.Frame(new Msg()));
        content.Headers.TryAddWithoutValidation("content-type", "application/grpc");
        using var request = new HttpRequestMessage(HttpMethod.Post, tls.Address + Unary) { Content = content, Version = HttpVersion.Version11, VersionPolicy = HttpVersionPolicy.RequestVersionExact };
        using var response = await http.SendAsync(request);
        Assert.Equal(HttpStatusCode.HttpVersionNotSupported, response.StatusCode);
        Assert.False(response.Headers.Contains("Upgrade"));
        Assert.Contains("gRPC needs HTTP/2", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);

        // The same port still serves gRPC over h2.
        using var channel = ConduitChannel.ForAddress(tls.Address, tls: new System.Net.Security.SslClientAuthenticationOptions { RemoteCertificateValidationCallback = (_, _, _, _) => true });
        Assert.Equal("x", (await new Probe.ProbeClient(channel).UnaryAsync(new Msg { Text = "x" })).Text);
    }
}
