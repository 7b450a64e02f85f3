using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;

namespace Conduit.Cli.Tests;

/// <summary>What a careful user of `conduit` meets (issue 14, "The conduit command"), on the real executable.</summary>
public sealed class CliTests(ConduitServer server) : IClassFixture<ConduitServer>
{
    private Task<(int ExitCode, string Output, string Errors)> Conduit(params string[] args) => ConduitServer.Run(args);

    private Task<(int ExitCode, string Output, string Errors)> Client(params string[] args) => ConduitServer.Run([.. args, "--server", server.Url]);

    private async Task<string> NewToken()
    {
        var created = await Client("accounts", "create", "--name", "t" + Guid.NewGuid().ToString("N")[..8]);
        Assert.True(created.ExitCode == 0, created.Errors);
        return created.Output.Trim();
    }

    [Fact]
    public async Task A_value_starting_with_at_is_that_value_not_a_file_to_read()
    {
        var hello = await Client("hello", "@/etc/hostname");
        Assert.Equal((0, "Hello @/etc/hostname\n", ""), hello);
    }

    [Theory]
    [InlineData("error: --from expects a whole number (0 or more), not 'abc'", "log", "consume", "--from", "abc")]
    [InlineData("error: <id> expects a whole number, not 'x'", "users", "get", "x")]
    [InlineData("error: --timeout expects a duration like 10s or 5m, not '5q'", "hello", "x", "--timeout", "5q")]
    [InlineData("error: --durability expects always, interval or never, not 'Unspecified'", "log", "create-topic", "t", "--durability", "Unspecified")]
    [InlineData("error: --log-durability expects always, interval or never, not 'unspecified'", "serve", "--log-durability", "unspecified")]
    [InlineData("error: --server: 'b c:2' in 'a:1,b c:2' is not host:port (every entry of a list has the list's scheme, http://).", "hello", "x", "--server", "a:1,b c:2")]
    [InlineData("error: --server: 'http://no address' is not a server address: give host:port, http(s)://host:port, a comma list, static:///a:1,b:2 or dns:///name:port.", "hello", "x", "--server", "no address")]
    [InlineData("error: --lb expects pick_first or round_robin, not 'random'", "hello", "x", "--lb", "random")]
    [InlineData("error: --service-config: Could not find file '/nonexistent.json'.", "hello", "x", "--service-config", "/nonexistent.json")]
    [InlineData("error: --ttl expects a duration like 250ms, 10s, 5m, 2h or 1d (at most 10000d), not '99999999999d'", "cache", "set", "k", "v", "--ttl", "99999999999d", "--token", "cdt_x")]
    [InlineData("error: Could not find file '/nonexistent.csv'.", "users", "create", "--from-csv", "/nonexistent.csv")]
    [InlineData("error: Required argument missing for command: 'hello'.", "hello")]
    public async Task A_failure_is_one_error_line_in_words_with_a_nonzero_exit_code_never_a_stack_trace(string expected, params string[] args)
    {
        var (code, output, errors) = await Conduit(args);
        Assert.NotEqual(0, code);
        Assert.Equal("", output);
        var lines = errors.TrimEnd('\n').Split('\n');
        Assert.Equal(expected, lines[0]);
        // At most a pointer to the help follows; never the help itself, a trace or a .NET type.
        Assert.True(lines.Length == 1 || (lines.Length == 2 && lines[1].EndsWith("--help' for usage.", StringComparison.Ordinal)), errors);
        Assert.DoesNotContain("   at ", errors);
        Assert.DoesNotContain("System.", errors);
        Assert.DoesNotContain("Usage:", errors);
        Assert.DoesNotContain("Exception", errors);
    }

    [Fact]
    public async Task Bench_json_with_no_call_answered_is_json_with_null_latencies_and_exit_code_1()
    {
        // Nothing listens on port 1: every call fails, so there is no latency to report.
        var (code, output, _) = await Conduit("bench", "helloworld.Greeter/SayHello", "-d", "300ms", "--warmup", "0s", "--data", "{\"name\":\"x\"}", "--server", "http://127.0.0.1:1", "--json");
        Assert.Equal(1, code);
        var result = System.Text.Json.Nodes.JsonNode.Parse(output)!;
        Assert.Equal(0, result["ok"]!.GetValue<long>());
        Assert.Null(result["latency_ms"]!["p99"]);
    }

    [Fact]
    public async Task Parse_errors_point_at_the_help_of_their_command()
    {
        var (code, _, errors) = await Conduit("log", "consume", "--from", "abc");
        Assert.Equal(2, code);
        Assert.EndsWith("\nRun 'conduit log consume --help' for usage.\n", errors);
    }

    [Fact]
    public async Task Conduit_help_is_conduit_dash_dash_help()
    {
        var help = await Conduit("help");
        Assert.Equal((0, ""), (help.ExitCode, help.Errors));
        Assert.Equal((await Conduit("--help")).Output, help.Output);
        Assert.Contains("serve", help.Output);
        Assert.Equal((await Conduit("users", "--help")).Output, (await Conduit("help", "users")).Output);
    }

    [Fact]
    public void Every_client_command_takes_server_timeout_json_and_verbose()
    {
        var root = Commands.Cli.Build();
        var clients = Leaves(root).Where(c => c.Parents.OfType<Command>().All(p => p.Name is not ("serve" or "interop" or "bench" or "certs")) && c.Name is not ("serve" or "bench")).ToList();
        Assert.True(clients.Count > 20, string.Join(", ", clients.Select(c => c.Name)));
        foreach (var command in clients)
        {
            var names = command.Options.Select(o => o.Name).Concat(root.Options.Where(o => o.Recursive).Select(o => o.Name)).ToHashSet();
            foreach (var option in new[] { "--server", "--timeout", "--json", "--verbose" })
            {
                Assert.True(names.Contains(option), $"{command.Name} has no {option}");
            }
        }
    }

    private static IEnumerable<Command> Leaves(Command command) =>
        command.Subcommands.Count == 0 ? [command] : command.Subcommands.SelectMany(Leaves);

    [Fact]
    public async Task Timeout_is_a_deadline_for_each_call()
    {
        // A consume waiting for a record that never comes ends at the deadline.
        Assert.Equal(0, (await Client("log", "create-topic", "timeout-test")).ExitCode);
        var watch = Stopwatch.StartNew();
        var waiting = await Client("log", "consume", "--topic", "timeout-test", "--from", "1000", "--count", "1", "--timeout", "300ms");
        Assert.Equal(1, waiting.ExitCode);
        Assert.StartsWith("error: DeadlineExceeded", waiting.Errors);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(20));
    }

    [Fact]
    public async Task Conduit_server_sets_the_default_server()
    {
        var (code, output, errors) = await Shell($"CONDUIT_SERVER={server.Url} {ConduitServer.CommandLine("hello", "env")}");
        Assert.Equal((0, "Hello env\n", ""), (code, output, errors));
    }

    private static async Task<(int, string, string)> Shell(string commandLine)
    {
        var info = new ProcessStartInfo("bash", ["-c", commandLine]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        using var process = Process.Start(info)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, await output, await errors);
    }

    [Fact]
    public async Task Json_prints_one_object_per_line()
    {
        var hello = await Client("hello", "json", "--json");
        Assert.Equal("Hello json", JsonDocument.Parse(hello.Output).RootElement.GetProperty("message").GetString());

        await Client("log", "produce", "--topic", "json-test", "--value", "a\tb");
        var consume = await Client("log", "consume", "--topic", "json-test", "--json");
        var record = JsonDocument.Parse(consume.Output).RootElement;
        Assert.Equal((0, "a\tb"), (record.GetProperty("offset").GetInt32(), record.GetProperty("value").GetString()));

        var users = await Client("users", "create", "--name", "Jay", "--email", "jay@example.com", "--json");
        Assert.Equal("jay@example.com", JsonDocument.Parse(users.Output).RootElement.GetProperty("email").GetString());
    }

    [Fact]
    public async Task Cache_output_a_script_can_trust()
    {
        var token = await NewToken();
        Assert.Equal(0, (await Client("cache", "set", "tab\tkey", "two\nlines", "--token", token)).ExitCode);
        Assert.Equal(0, (await Client("cache", "set", "plain", "v", "--token", token)).ExitCode);

        // get ends with a newline, also into a pipe.
        Assert.Equal((0, "v\n"), ((await Client("cache", "get", "plain", "--token", token)).ExitCode, (await Client("cache", "get", "plain", "--token", token)).Output));

        // dump: one line per key, tabs and newlines escaped; a grammatical count.
        var dump = await Client("cache", "dump", "--token", token);
        Assert.Equal(["plain\tv", "tab\\tkey\ttwo\\nlines"], dump.Output.TrimEnd('\n').Split('\n').Order(StringComparer.Ordinal));
        Assert.Equal("2 keys\n", dump.Errors);
        Assert.Equal(0, (await Client("cache", "del", "plain", "--token", token)).ExitCode);
        Assert.Equal("1 key\n", (await Client("cache", "dump", "--token", token)).Errors);

        var json = await Client("cache", "dump", "--token", token, "--json");
        var entry = JsonDocument.Parse(json.Output).RootElement;
        Assert.Equal(("tab\tkey", "two\nlines"), (entry.GetProperty("key").GetString(), entry.GetProperty("value").GetString()));
    }

    [Fact]
    public async Task Log_consume_escapes_tabs_and_newlines()
    {
        await Client("log", "produce", "--topic", "escape-test", "--value", "a\tb\nc\\d");
        var consume = await Client("log", "consume", "--topic", "escape-test");
        Assert.Equal((0, "0\ta\\tb\\nc\\\\d\n"), (consume.ExitCode, consume.Output));
    }

    [Fact]
    public async Task Dry_runs_say_they_were_dry_runs()
    {
        var created = await Client("users", "create", "--name", "Dry", "--email", "dry@example.com");
        var id = created.Output.Split('\t')[0];
        var delete = await Client("users", "delete", id, "--dry-run");
        Assert.Equal(0, delete.ExitCode);
        Assert.StartsWith("dry run:", delete.Errors);
        Assert.Equal(0, (await Client("users", "get", id)).ExitCode);
        Assert.StartsWith("dry run:", (await Client("users", "update", id, "--name", "Wet", "--dry-run")).Errors);
    }

    [Fact]
    public async Task Serve_help_lists_every_setting_with_its_default()
    {
        var help = (await Conduit("serve", "--help")).Output;
        foreach (var expected in new[] { "--admin-token", "--log-durability <always|interval|never>", "always (default", "docs/operations.md", "--data", "(default ./data)" })
        {
            Assert.Contains(expected, help);
        }
        Assert.DoesNotContain("Unspecified", help, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("Unspecified", (await Conduit("log", "create-topic", "--help")).Output, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Long_work_shows_progress_on_a_terminal_and_is_quiet_in_a_pipe()
    {
        var token = await NewToken();
        await Client("cache", "set", "k", "v", "--token", token);
        var terminal = await ConduitServer.RunOnTerminal(ConduitServer.CommandLine("cache", "dump", "--token", token, "--server", server.Url));
        Assert.Contains("dump: 1 key", terminal);
        var piped = await Client("cache", "dump", "--token", token);
        Assert.Equal(("k\tv\n", "1 key\n"), (piped.Output, piped.Errors));

        var csv = Path.Combine(server.DataDir, "progress.csv");
        await File.WriteAllTextAsync(csv, "name,email\nPro,pro@example.com\n");
        var import = await ConduitServer.RunOnTerminal(ConduitServer.CommandLine("users", "create", "--from-csv", csv, "--server", server.Url));
        Assert.Contains("progress.csv: 0 users sent", import);
        Assert.Contains("created 1 user", import);

        // A very short load run: the progress line on a terminal, none in a pipe.
        string[] bench = ["bench", "helloworld.Greeter/SayHello", "-d", "1500ms", "--warmup", "100ms", "--data", "{\"name\":\"x\"}", "--server", server.Url];
        Assert.Matches(@"bench: \d+ calls? ok, 0 errors", await ConduitServer.RunOnTerminal(ConduitServer.CommandLine(bench)));
        var pipedBench = await Conduit(bench);
        Assert.Equal(0, pipedBench.ExitCode);
        Assert.DoesNotContain("\r", pipedBench.Output + pipedBench.Errors);
        Assert.Contains("1 connection x", pipedBench.Output);
    }
}

/// <summary>Cli.ReportError, in process: the one line a failed call prints.</summary>
public sealed class ReportErrorTests
{
    private static string Report(global::Grpc.Core.Status status)
    {
        var previous = Console.Error;
        using var writer = new StringWriter();
        Console.SetError(writer);
        try
        {
            Commands.Cli.ReportError(new global::Grpc.Core.RpcException(status));
        }
        finally
        {
            Console.SetError(previous);
        }
        return writer.ToString();
    }

    [Fact]
    public void The_cause_is_added_once_and_only_when_the_message_does_not_say_it_already()
    {
        var refused = new HttpRequestException("Connection refused (127.0.0.1:1)", new System.Net.Sockets.SocketException(111));
        var cause = refused.InnerException!.Message;
        Assert.Equal($"error: Unavailable: Error connecting to subchannel. ({cause})\n",
            Report(new global::Grpc.Core.Status(global::Grpc.Core.StatusCode.Unavailable, "Error connecting to subchannel.", refused)));
        Assert.Equal($"error: Unavailable: Error starting gRPC call. {cause}\n",
            Report(new global::Grpc.Core.Status(global::Grpc.Core.StatusCode.Unavailable, $"Error starting gRPC call. {cause}", refused)));
    }
}
