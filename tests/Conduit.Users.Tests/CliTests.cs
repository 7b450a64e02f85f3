using System.Diagnostics;
using System.Text.RegularExpressions;
using Conduit.Users.Storage;

namespace Conduit.Users.Tests;

/// <summary>`conduit users ...` (the built executable) against an in-process server on SQLite.</summary>
public sealed class CliTests : IAsyncLifetime
{
    private UsersHost _host = null!;
    private string _dir = "";

    public async Task InitializeAsync()
    {
        _host = await UsersHost.StartAsync((await SqliteBackend.Instance.NewDatabaseAsync()).Store);
        _dir = Directory.CreateTempSubdirectory("conduit-users-cli-").FullName;
    }

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private Task<(int ExitCode, string Output, string Errors)> Users(params string[] args) =>
        Processes.Conduit(["users", .. args, "--server", _host.Address]);

    private string Csv(string name, string text)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public async Task Create_get_find_update_delete()
    {
        var created = await Users("create", "--name", "Ann Lee", "--email", "ann@example.com");
        Assert.True(created.ExitCode == 0, created.Errors);
        var id = created.Output.Split('\t')[0];
        Assert.Equal($"{id}\tAnn Lee\tann@example.com\n", created.Output);
        Assert.Equal("created 1 user\n", created.Errors);

        Assert.Equal(created.Output, (await Users("get", id)).Output);
        Assert.Equal(created.Output, (await Users("find", "ANN@EXAMPLE.COM")).Output);
        Assert.Equal($"{id}\tAnn\tann@example.com\n", (await Users("update", id, "--name", "Ann")).Output);
        Assert.Equal($"{id}\tAnn\tann@example.com\n", (await Users("delete", id, "--dry-run")).Output);
        Assert.Equal($"{id}\tAnn\tann@example.com\n", (await Users("delete", id)).Output);

        var gone = await Users("get", id);
        Assert.Equal(1, gone.ExitCode);
        Assert.Equal($"error: NotFound: No user has the id {id}.\n", gone.Errors);
    }

    [Fact]
    public async Task Invalid_and_duplicate_users_are_reported_with_the_field()
    {
        await Users("create", "--name", "Ann", "--email", "ann@example.com");
        var bad = await Users("create", "--name", "Bob", "--email", "bob-at-example.com");
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("InvalidArgument", bad.Errors, StringComparison.Ordinal);
        Assert.Contains("requests[0].email", bad.Errors, StringComparison.Ordinal);
        var dup = await Users("create", "--name", "Ann 2", "--email", "Ann@Example.com");
        Assert.Equal(1, dup.ExitCode);
        Assert.StartsWith("error: AlreadyExists", dup.Errors, StringComparison.Ordinal);
        var usage = await Users("create", "--name", "Only a name");
        Assert.NotEqual(0, usage.ExitCode);
        Assert.Contains("give both --name and --email", usage.Errors + usage.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task From_csv_streams_every_row_with_quotes_and_an_optional_header()
    {
        var path = Csv("people.csv", "email,name\r\nann@example.com,Ann\r\n\"bob@example.com\",\"Lee, Bob \"\"B\"\"\"\r\n\r\ncy@example.com,Cy\r\n");
        var result = await Users("create", "--from-csv", path);
        Assert.True(result.ExitCode == 0, result.Errors);
        Assert.Equal("created 3 users\n", result.Errors);
        var listed = (await Users("list")).Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('\t')[1]);
        Assert.Equal(["Ann", "Lee, Bob \"B\"", "Cy"], listed);

        var noHeader = await Users("create", "--from-csv", Csv("plain.csv", "Dee,dee@example.com\nEve,eve@example.com\n"));
        Assert.Equal("created 2 users\n", noHeader.Errors);
    }

    [Fact]
    public async Task A_bad_csv_row_creates_nothing_and_names_its_line()
    {
        var path = Csv("bad.csv", "name,email\nAnn,ann@example.com\nBob,bob@example.com\nNobody,not-an-email\nCy,cy@example.com\n");
        var result = await Users("create", "--from-csv", path);
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("Request 2", result.Errors, StringComparison.Ordinal);
        Assert.Contains("(request 2 is bad.csv line 4)", result.Errors, StringComparison.Ordinal);
        Assert.Equal("", (await Users("list")).Output);

        var shortRow = await Users("create", "--from-csv", Csv("short.csv", "Ann,ann@example.com\nBob\n"));
        Assert.Equal(1, shortRow.ExitCode);
        Assert.Contains("short.csv line 2", shortRow.Errors, StringComparison.Ordinal);
        Assert.Equal("", (await Users("list")).Output);
    }

    [Fact]
    public async Task A_dry_run_csv_import_prints_what_would_be_created()
    {
        var result = await Users("create", "--dry-run", "--from-csv", Csv("dry.csv", "Ann,ann@example.com\n"));
        Assert.Equal("0\tAnn\tann@example.com\n", result.Output);
        Assert.Equal("dry run: 1 user would be created\n", result.Errors);
        Assert.Equal("", (await Users("list")).Output);
    }

    [Fact]
    public async Task List_pages_and_follows_tokens()
    {
        await Users("create", "--from-csv", Csv("five.csv", string.Concat(Enumerable.Range(1, 5).Select(i => $"U{i},u{i}@example.com\n"))));
        var page2 = await Users("list", "--page", "2", "--page-size", "2");
        Assert.Equal(["U3", "U4"], page2.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('\t')[1]));
        var token = Regex.Match(page2.Errors, "--page-token (\\S+)").Groups[1].Value;
        var page3 = await Users("list", "--page-size", "2", "--page-token", token);
        Assert.Equal(["U5"], page3.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('\t')[1]));
        Assert.Equal("", page3.Errors);
        var all = await Users("list", "--all", "--page-size", "2");
        Assert.Equal(5, all.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
    }
}

/// <summary>`conduit serve` itself: the users database setting, migrations at start-up, data kept across restarts.</summary>
[Collection(PostgresCollection.Name)]
public sealed class ServeTests(PostgresServer postgres)
{
    [Fact]
    public async Task Serve_on_postgresql_with_users_db()
    {
        var (store, database) = await postgres.NewDatabaseAsync();
        await store.DisposeAsync();
        await using (var serve = await Serve("--users-db", database))
        {
            Assert.Contains($"users: PostgreSQL 127.0.0.1:{postgres.Port}/", serve.Log, StringComparison.Ordinal);
            var created = await Processes.Conduit("users", "create", "--name", "Ann", "--email", "ann@example.com", "--server", serve.Address);
            Assert.True(created.ExitCode == 0, created.Errors);
        }
        // It is in PostgreSQL, where another node would read it.
        await using var direct = postgres.Open(database);
        Assert.Equal("Ann", (await direct.GetByEmailAsync("ann@example.com"))!.Name);
    }

    [Fact]
    public async Task Serve_keeps_users_in_the_data_folder_across_restarts()
    {
        var data = Directory.CreateTempSubdirectory("conduit-users-serve-").FullName;
        try
        {
            await using (var serve = await Serve("--data", data))
            {
                var created = await Processes.Conduit("users", "create", "--name", "Ann", "--email", "ann@example.com", "--server", serve.Address);
                Assert.True(created.ExitCode == 0, created.Errors);
            }
            Assert.True(File.Exists(Path.Combine(data, UserStores.DefaultFileName)));
            await using (var again = await Serve("--data", data))
            {
                var listed = await Processes.Conduit("users", "list", "--server", again.Address);
                Assert.EndsWith("\tAnn\tann@example.com\n", listed.Output, StringComparison.Ordinal);
            }
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }
    }

    [Fact]
    public async Task Serve_keeps_serving_the_rest_when_the_users_database_cannot_be_reached()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        // One storage failure keeps only its services down (docs/operations.md): serve starts,
        // says what failed in one line, and the users' calls answer UNAVAILABLE saying so.
        await using var serve = await Serve("--users-db", $"Host=127.0.0.1;Port={port};Database=nowhere;Username=postgres;Timeout=3");
        Assert.Contains($"The users database could not be opened: users database (PostgreSQL 127.0.0.1:{port}/nowhere): ", serve.Log, StringComparison.Ordinal);
        var listed = await Processes.Conduit("users", "list", "--server", serve.Address);
        Assert.NotEqual(0, listed.ExitCode);
        Assert.Contains("Unavailable", listed.Errors, StringComparison.Ordinal);
        Assert.Contains("the users database could not be opened", listed.Errors, StringComparison.Ordinal);
        var hello = await Processes.Conduit("hello", "you", "--server", serve.Address);
        Assert.True(hello.ExitCode == 0, hello.Errors);
    }

    private static async Task<ServeProcess> Serve(params string[] args)
    {
        var data = args.Contains("--data") ? [] : new[] { "--data", Directory.CreateTempSubdirectory("conduit-users-serve-").FullName };
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in (string[])[Paths.ConduitDll, "serve", "--urls", "http://127.0.0.1:0", .. data, .. args]) info.ArgumentList.Add(arg);
        var process = Process.Start(info)!;
        var log = new System.Text.StringBuilder();
        while (await process.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60)) is { } line)
        {
            log.AppendLine(line);
            var match = Regex.Match(line, "listening on (http://127.0.0.1:\\d+)");
            if (match.Success) return new ServeProcess(process, match.Groups[1].Value, log.ToString(), data.Length > 0 ? data[1] : null);
        }
        throw new InvalidOperationException("conduit serve exited: " + log + await process.StandardError.ReadToEndAsync());
    }

    private sealed class ServeProcess(Process process, string address, string log, string? ownDataDir) : IAsyncDisposable
    {
        public string Address => address;

        public string Log => log;

        public async ValueTask DisposeAsync()
        {
            // Ctrl-C, as a person stops it; it exits on its own once stopped.
            Process.Start("kill", ["-INT", process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();
            await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
            process.Dispose();
            if (ownDataDir is not null) Directory.Delete(ownDataDir, recursive: true);
        }
    }
}
