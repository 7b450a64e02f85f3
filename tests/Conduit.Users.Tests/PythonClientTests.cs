using Conduit.Grpc;
using Conduit.Protos.User.V1;
using Grpc.Core;

namespace Conduit.Users.Tests;

/// <summary>The official Python gRPC (grpcio, C-core) calling all four kinds of RPC of the service.</summary>
public abstract class PythonClientTests(IBackend backend) : IAsyncLifetime
{
    private UsersHost _host = null!;

    public async Task InitializeAsync() => _host = await UsersHost.StartAsync((await backend.NewDatabaseAsync()).Store);

    public async Task DisposeAsync() => await _host.DisposeAsync();

    private Task<(int ExitCode, string Output, string Errors)> Python(params string[] args) =>
        Processes.Python("users_client.py", ["--server", new Uri(_host.Address).Authority, .. args]);

    [Fact]
    public async Task Create_get_and_list_through_grpcio()
    {
        var created = await Python("create", "Ann Lee=ann@example.com", "Bob=bob@example.com");
        Assert.True(created.ExitCode == 0, created.Errors);
        var lines = created.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("count: 2", lines[^1]);
        var annId = long.Parse(lines[0].Split('\t')[0], System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal($"{annId}\tAnn Lee\tann@example.com", lines[0]);

        var got = await Python("get", annId.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal($"{annId}\tAnn Lee\tann@example.com\n", got.Output);

        var page1 = await Python("list", "--page-size", "1");
        var page1Lines = page1.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal($"{annId}\tAnn Lee\tann@example.com", page1Lines[0]);
        Assert.StartsWith("next-page-token: ", page1Lines[1], StringComparison.Ordinal);
        var page2 = await Python("list", "--page-size", "1", "--page-token", page1Lines[1]["next-page-token: ".Length..]);
        Assert.EndsWith("\tBob\tbob@example.com", page2.Output.Split('\n')[0], StringComparison.Ordinal);
        Assert.Equal(2, (await Python("list", "--page", "1", "--page-size", "10")).Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
    }

    [Fact]
    public async Task A_bad_request_in_a_grpcio_stream_names_its_index_and_creates_nothing()
    {
        var result = await Python("create", "Cy=cy@example.com", "Dee=dee@example.com", "Bad=not-an-email");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("INVALID_ARGUMENT: Request 2", result.Errors, StringComparison.Ordinal);
        Assert.Contains("index: 2", result.Errors, StringComparison.Ordinal);
        Assert.Equal("", (await Python("list")).Output);
        var notFound = await Python("get", "12345");
        Assert.Equal(1, notFound.ExitCode);
        Assert.StartsWith("NOT_FOUND", notFound.Errors, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_dry_run_from_grpcio_stores_nothing()
    {
        var result = await Python("create", "--dry-run", "Cy=cy@example.com");
        Assert.Equal("0\tCy\tcy@example.com\ncount: 1\n", result.Output);
        Assert.Equal("", (await Python("list")).Output);
    }

    [Fact]
    public async Task Chat_between_grpcio_and_our_client()
    {
        using var ours = _host.Client.Chat(new CallOptions(new Metadata { { "room", "py" } }).WithTimeout(TimeSpan.FromSeconds(60)));
        // Our participant is in the room once its own first message comes back.
        await ours.RequestStream.WriteAsync(new ChatMessage { User = "dotnet", Message = "waiting" });
        Assert.True(await ours.ResponseStream.MoveNext());

        var python = await Python("chat", "--user", "python", "--room", "py", "hello from grpcio", "bye");
        Assert.True(python.ExitCode == 0, python.Errors);
        Assert.Equal("python: hello from grpcio\npython: bye\n", python.Output);
        Assert.True(await ours.ResponseStream.MoveNext());
        Assert.Equal(("python", "hello from grpcio"), (ours.ResponseStream.Current.User, ours.ResponseStream.Current.Message));
        Assert.True(await ours.ResponseStream.MoveNext());
        Assert.Equal("bye", ours.ResponseStream.Current.Message);
    }
}

public sealed class SqlitePythonClientTests() : PythonClientTests(SqliteBackend.Instance);

[Collection(PostgresCollection.Name)]
public sealed class PostgresPythonClientTests(PostgresServer postgres) : PythonClientTests(postgres);
