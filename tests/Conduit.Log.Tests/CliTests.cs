
namespace Conduit.Log.Tests;

/// <summary>`conduit log ...` as a person types it, against a running server.</summary>
public class CliTests
{
    private static async Task<(int ExitCode, string Output, string Errors)> Conduit(string? stdin, params string[] args)
    {
        await using var child = ChildProcess.Conduit(args);
        if (stdin is not null) await child.StandardInput.WriteAsync(stdin);
        child.StandardInput.Close();
        var code = await child.WaitForExit(TimeSpan.FromSeconds(60));
        return (code, child.Output, child.Errors);
    }

    [Fact]
    public async Task Produce_consume_tail_and_topics_from_the_command_line()
    {
        await using var server = await LogServer.StartAsync();
        var url = server.Address;

        Assert.Equal((0, "0\n1\n2\n", ""), await Conduit("alpha\nbeta\ngamma\n", "log", "produce", "--server", url));
        Assert.Equal((0, "0\n", ""), await Conduit(null, "log", "produce", "--topic", "orders", "--value", "order-1", "--server", url));

        Assert.Equal((0, "1\tbeta\n2\tgamma\n", ""), await Conduit(null, "log", "consume", "--from", "1", "--server", url));
        Assert.Equal((0, "0\talpha\n", ""), await Conduit(null, "log", "consume", "--from", "0", "--count", "1", "--server", url));
        Assert.Equal((0, "2\tgamma\n", ""), await Conduit(null, "log", "tail", "-n", "1", "--server", url));

        var past = await Conduit(null, "log", "consume", "--from", "9", "--server", url);
        Assert.Equal(1, past.ExitCode);
        Assert.Contains("OutOfRange: Offset 9 is past the end", past.Errors);

        var topics = await Conduit(null, "log", "topics", "--server", url);
        Assert.Equal(0, topics.ExitCode);
        var lines = topics.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("TOPIC", lines[0]);
        Assert.Matches(@"^\(default\)\s+0\s+3\s+\d+\s+1\s+always$", lines[1]);
        Assert.Matches(@"^orders\s+0\s+1\s+\d+\s+1\s+always$", lines[2]);
    }

    [Fact]
    public async Task Produce_idempotent_writes_each_line_once_and_prints_the_offsets_in_order()
    {
        await using var server = await LogServer.StartAsync();
        var url = server.Address;
        var lines = string.Concat(Enumerable.Range(0, 50).Select(i => $"line-{i}\n"));
        Assert.Equal((0, string.Concat(Enumerable.Range(0, 50).Select(i => $"{i}\n")), ""), await Conduit(lines, "log", "produce", "--idempotent", "--topic", "idem", "--server", url));
        Assert.Equal((0, "50\n", ""), await Conduit(null, "log", "produce", "--idempotent", "--topic", "idem", "--value", "one more", "--server", url));
        var verbose = await Conduit("x\n", "log", "produce", "--idempotent", "--topic", "idem", "--server", url, "--verbose");
        Assert.Equal((0, "51\n"), (verbose.ExitCode, verbose.Output));
        Assert.Matches(@"producer \d+ epoch 0", verbose.Errors);
        Assert.Equal((0, "49\tline-49\n50\tone more\n51\tx\n", ""), await Conduit(null, "log", "consume", "--topic", "idem", "--from", "49", "--server", url));
        var both = await Conduit(null, "log", "produce", "--idempotent", "--dry-run", "--value", "v", "--server", url);
        Assert.Equal(2, both.ExitCode);
    }

    [Fact]
    public async Task Dry_runs_of_produce_and_create_topic_print_what_would_happen_and_change_nothing()
    {
        await using var server = await LogServer.StartAsync();
        var url = server.Address;
        Assert.Equal((0, "0\n", ""), await Conduit(null, "log", "produce", "--value", "real", "--server", url));

        Assert.Equal((0, "1\n", "dry run: nothing was appended\n"), await Conduit(null, "log", "produce", "--value", "x", "--dry-run", "--server", url));
        Assert.Equal((0, "1\n2\n", "dry run: nothing was appended\n"), await Conduit("a\nb\n", "log", "produce", "--dry-run", "--server", url));
        var invalid = await Conduit(null, "log", "produce", "--topic", "no/slashes", "--value", "x", "--dry-run", "--server", url);
        Assert.Equal(1, invalid.ExitCode);
        Assert.Contains("InvalidArgument: Topic name 'no/slashes'", invalid.Errors);

        var created = await Conduit(null, "log", "create-topic", "audit", "--durability", "never", "--dry-run", "--server", url);
        Assert.Equal(0, created.ExitCode);
        Assert.StartsWith("would create topic audit: durability never,", created.Output);

        var info = await server.Admin.DescribeTopicAsync(new Protos.Log.V1.DescribeTopicRequest { Name = "" });
        Assert.Equal(1ul, info.NextOffset);
        var topics = await server.Admin.ListTopicsAsync(new Protos.Log.V1.ListTopicsRequest());
        Assert.Equal([""], topics.Topics.Select(t => t.Name));
    }

    [Fact]
    public async Task Tail_follow_prints_records_appended_after_it_started()
    {
        await using var server = await LogServer.StartAsync();
        await using var tail = ChildProcess.Conduit("log", "tail", "-f", "--server", server.Address);
        // Produce until the follower prints the first record: then it is following.
        await server.Log.ProduceAsync(new Protos.Log.V1.ProduceRequest { Record = new Protos.Log.V1.Record { Value = Google.Protobuf.ByteString.CopyFromUtf8("first") } });
        await tail.WaitForLine("^0\tfirst$");
        await server.Log.ProduceAsync(new Protos.Log.V1.ProduceRequest { Record = new Protos.Log.V1.Record { Value = Google.Protobuf.ByteString.CopyFromUtf8("second") } });
        await tail.WaitForLine("^1\tsecond$");
        tail.Interrupt();
        // Ctrl-C ends it at once, with the shell's convention for SIGINT (128 + 2), like tail -f.
        Assert.Equal(130, await tail.WaitForExit(TimeSpan.FromSeconds(20)));
        Assert.Equal("", tail.Errors);
    }
}
