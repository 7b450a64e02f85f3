namespace Conduit.Interop.Tests;

/// <summary>The real `conduit` executable, driven as a person would from a terminal.</summary>
public class ExecutableTests
{
    private static async Task<(ChildProcess Server, string Url)> Serve(string dataDir, params string[] flags)
    {
        var server = ChildProcess.Conduit(["serve", "--urls", "http://127.0.0.1:0", "--data", dataDir, .. flags]);
        var match = await server.WaitForLine(@"listening on (http://127\.0\.0\.1:\d+)");
        return (server, match.Groups[1].Value);
    }

    [Fact]
    public async Task Serve_answers_conduit_hello_and_a_python_greeter_reports_on_sigusr1_and_stops_cleanly_on_ctrl_c()
    {
        var data = Directory.CreateTempSubdirectory("conduit-data-").FullName;
        // Calls that end OK are logged at Debug: ask for them to see the per-call log line.
        var (server, url) = await Serve(data, "--log-level", "Debug");
        await using (server)
        {
            var hello = await ChildProcess.Run("dotnet", Paths.ConduitDll, "hello", "World", "--server", url);
            Assert.Equal((0, "Hello World\n", ""), (hello.ExitCode, hello.Output, hello.Errors));
            // --verbose: the client's own per-call line on stderr (ClientLoggingInterceptor).
            var verbose = await ChildProcess.Run("dotnet", Paths.ConduitDll, "hello", "again", "--server", url, "--verbose");
            Assert.Equal((0, "Hello again\n"), (verbose.ExitCode, verbose.Output));
            Assert.Matches(@"^\d\d:\d\d:\d\d\.\d{3} /helloworld\.Greeter/SayHello OK [\d.]+ms\n$", verbose.Errors);

            var python = await ChildProcess.Run(Paths.Python, Paths.PythonScript("greeter_client.py"), "--server", url.Replace("http://", ""), "Python");
            Assert.True(python.ExitCode == 0, python.Errors);
            Assert.Equal("Hello Python\n", python.Output);

            // SIGUSR1 prints the figures so far and the server goes on serving.
            server.Signal("USR1");
            await server.WaitForLine(@"so far 3 calls \(0 failed\); allocated [\d.]+ MiB \(\d+ bytes per call\); GC collections gen0/gen1/gen2 \d+/\d+/\d+");

            // A chat participant is connected while the server stops: nothing hangs.
            await using var chat = ChildProcess.Conduit("chat", "--user", "ann", "--server", url);
            await chat.StandardInput.WriteLineAsync("still here?");
            await chat.StandardInput.FlushAsync();
            await chat.WaitForLine("ann: still here\\?");
            server.Interrupt();
            Assert.Equal(0, await server.WaitForExit(TimeSpan.FromSeconds(20)));
            Assert.Contains("/helloworld.Greeter/SayHello OK", server.Output);
            // The open stream is ended (normally UNAVAILABLE "the server is shutting down"; a
            // connection torn down first shows as a transport error) and the client exits.
            var chatExit = await chat.WaitForExit(TimeSpan.FromSeconds(20));
            Assert.StartsWith("error: ", chat.Errors);
            Assert.Equal(1, chatExit);
        }
        Directory.Delete(data, recursive: true);
    }

    [Fact]
    public async Task Two_chat_terminals_in_one_room_see_each_others_messages()
    {
        var data = Directory.CreateTempSubdirectory("conduit-data-").FullName;
        var (server, url) = await Serve(data);
        await using (server)
        {
            await using var ann = ChildProcess.Conduit("chat", "--user", "ann", "--room", "dev", "--server", url);
            await using var bob = ChildProcess.Conduit("chat", "--user", "bob", "--room", "dev", "--server", url);
            await using var eve = ChildProcess.Conduit("chat", "--user", "eve", "--room", "other", "--server", url);
            // Each one says hello until it sees its own line: then it is in the room.
            foreach (var (who, process) in new[] { ("ann", ann), ("bob", bob), ("eve", eve) })
            {
                await process.StandardInput.WriteLineAsync($"{who} joined");
                await process.StandardInput.FlushAsync();
                await process.WaitForLine($"{who}: {who} joined");
            }
            await ann.StandardInput.WriteLineAsync("hi bob");
            await ann.StandardInput.FlushAsync();
            await bob.WaitForLine(@"^\[\d\d:\d\d:\d\d\] ann: hi bob$");
            await bob.StandardInput.WriteLineAsync("hi ann");
            await bob.StandardInput.FlushAsync();
            await ann.WaitForLine("bob: hi ann");

            foreach (var process in new[] { ann, bob, eve })
            {
                process.StandardInput.Close();
                Assert.Equal(0, await process.WaitForExit(TimeSpan.FromSeconds(20)));
            }
            Assert.DoesNotContain("hi bob", eve.Output);
            Assert.DoesNotContain("eve joined", bob.Output);
        }
        Directory.Delete(data, recursive: true);
    }

    [Fact]
    public async Task Interop_entry_points_take_the_official_flags()
    {
        await using var server = ChildProcess.Conduit("interop", "server", "--port=0");
        var port = (await server.WaitForLine(@"listening on http://127\.0\.0\.1:(\d+)")).Groups[1].Value;
        var pass = await ChildProcess.Run("dotnet", Paths.ConduitDll, "interop", "client", "--server_host=127.0.0.1",
            $"--server_port={port}", "--test_case=large_unary", "--use_tls=false");
        Assert.True(pass.ExitCode == 0, pass.Errors);
        var unknown = await ChildProcess.Run("dotnet", Paths.ConduitDll, "interop", "client", "--server_host=127.0.0.1",
            $"--server_port={port}", "--test_case=no_such_case");
        Assert.NotEqual(0, unknown.ExitCode);
        Assert.Contains("no_such_case", unknown.Errors);
    }

    [Fact]
    public async Task Interop_server_over_tls_passes_every_case_of_the_python_client()
    {
        using var certificate = new TestCertificate();
        await using var server = ChildProcess.Conduit("interop", "server", "--port=0", "--use_tls",
            $"--tls-cert={certificate.CertFile}", $"--tls-key={certificate.KeyFile}");
        var port = (await server.WaitForLine(@"listening on https://127\.0\.0\.1:(\d+)")).Groups[1].Value;
        var (code, output, errors) = await ChildProcess.Run(Paths.Python, Paths.PythonScript("interop_client.py"),
            "--server_host", "127.0.0.1", "--server_port", port, "--test_case", "all",
            "--use_tls", "true", "--ca_file", certificate.CertFile, "--server_host_override", "localhost");
        Assert.True(code == 0, $"exit {code}:\n{output}\n{errors}");
        Assert.Equal(InteropClient.TestCases.Count, output.Split('\n').Count(line => line.StartsWith("PASS ", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task Interop_client_over_tls_passes_every_case_against_the_python_server()
    {
        using var certificate = new TestCertificate();
        await using var server = ChildProcess.Start(Paths.Python, Paths.PythonScript("interop_server.py"), "--port", "0",
            "--use_tls", "true", "--tls_cert", certificate.CertFile, "--tls_key", certificate.KeyFile);
        var port = (await server.WaitForLine(@"^PORT (\d+)$")).Groups[1].Value;
        var (code, output, errors) = await ChildProcess.Run("dotnet", Paths.ConduitDll, "interop", "client", "--server_host=127.0.0.1",
            $"--server_port={port}", "--test_case=all", "--use_tls=true", $"--ca_file={certificate.CertFile}", "--server_host_override=localhost");
        Assert.True(code == 0, $"exit {code}:\n{output}\n{errors}");
        Assert.Equal(InteropClient.TestCases.Select(c => $"{c}: passed"), output.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public async Task Interop_client_with_tls_refuses_a_server_whose_certificate_it_does_not_trust()
    {
        using var trusted = new TestCertificate();
        using var presented = new TestCertificate();
        await using var server = ChildProcess.Start(Paths.Python, Paths.PythonScript("interop_server.py"), "--port", "0",
            "--use_tls", "true", "--tls_cert", presented.CertFile, "--tls_key", presented.KeyFile);
        var port = (await server.WaitForLine(@"^PORT (\d+)$")).Groups[1].Value;
        var (code, _, errors) = await ChildProcess.Run("dotnet", Paths.ConduitDll, "interop", "client", "--server_host=127.0.0.1",
            $"--server_port={port}", "--test_case=empty_unary", "--use_tls=true", $"--ca_file={trusted.CertFile}", "--server_host_override=localhost");
        Assert.Equal(1, code);
        Assert.Contains("empty_unary: FAILED: ", errors);
        // grpc-dotnet ends a call whose TLS handshake failed with INTERNAL (the old runtime said UNAVAILABLE).
        Assert.Contains("StatusCode=\"Internal\"", errors);
        Assert.Contains("The SSL connection could not be established", errors);
    }
}
