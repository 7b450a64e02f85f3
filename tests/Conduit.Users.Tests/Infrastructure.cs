using System.Diagnostics;
using System.Runtime.CompilerServices;
using Conduit.Hosting;
using Conduit.Protos.User.V1;
using Conduit.Users.Storage;
using Npgsql;

namespace Conduit.Users.Tests;

/// <summary>An in-process conduit server on 127.0.0.1 (free port) running only user.v1.UserService.</summary>
public sealed class UsersHost : InProcessServer
{
    private UsersHost(InProcessServer server, ObservedStore store) : base(server)
    {
        Store = store;
        Client = new UserService.UserServiceClient(Channel);
    }

    public UserService.UserServiceClient Client { get; }

    /// <summary>The store the service runs on, observed (see <see cref="ObservedStore"/>).</summary>
    public ObservedStore Store { get; }

    /// <summary>Starts the service on <paramref name="store"/>, migrated at start-up as in `conduit serve`; the host disposes the store.</summary>
    public static async Task<UsersHost> StartAsync(IUserStore store)
    {
        var observed = new ObservedStore(store);
        var server = await InProcessServer.StartAsync(s => s.AddUsers(_ => observed), a => a.MapUsers());
        return new UsersHost(server, observed);
    }
}

/// <summary>
/// Passes everything to the real store, and records how ListUsers reads it: how many rows each
/// enumeration pulled, whether it reached the end, and when it was let go.
/// </summary>
public sealed class ObservedStore(IUserStore inner) : IUserStore
{
    public sealed class Enumeration
    {
        public int Pulled;
        public bool ReachedEnd;
        public TaskCompletionSource Released { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Completes when the enumeration's cancellation token fires (the caller went away).</summary>
        public TaskCompletionSource Cancelled { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private readonly List<Enumeration> _lists = [];

    public IUserStore Inner => inner;

    public IReadOnlyList<Enumeration> Lists { get { lock (_lists) return _lists.ToArray(); } }

    /// <summary>When set, an enumeration stops after <see cref="HoldAfter"/> rows until this completes.</summary>
    public TaskCompletionSource? Hold { get; set; }

    public int HoldAfter { get; set; } = 50;

    public string Description => inner.Description;

    public Task MigrateAsync(CancellationToken cancellationToken = default) => inner.MigrateAsync(cancellationToken);

    public Task<UserRecord?> GetAsync(long id, CancellationToken cancellationToken = default) => inner.GetAsync(id, cancellationToken);

    public Task<UserRecord?> GetByEmailAsync(string email, CancellationToken cancellationToken = default) => inner.GetByEmailAsync(email, cancellationToken);

    public async IAsyncEnumerable<UserRecord> ListAsync(long afterId, long skip, int limit, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var e = new Enumeration();
        lock (_lists) _lists.Add(e);
        using var cancelled = cancellationToken.Register(() => e.Cancelled.TrySetResult());
        try
        {
            await foreach (var user in inner.ListAsync(afterId, skip, limit, cancellationToken))
            {
                if (Interlocked.Increment(ref e.Pulled) == HoldAfter && Hold is { } hold) await hold.Task;
                yield return user;
            }
            e.ReachedEnd = true;
        }
        finally
        {
            e.Released.TrySetResult();
        }
    }

    public Task<IReadOnlyList<UserRecord>> CreateAsync(IReadOnlyList<NewUser> users, bool dryRun, CancellationToken cancellationToken = default) =>
        inner.CreateAsync(users, dryRun, cancellationToken);

    public Task<UserRecord?> UpdateAsync(long id, string? name, string? email, bool dryRun, CancellationToken cancellationToken = default) =>
        inner.UpdateAsync(id, name, email, dryRun, cancellationToken);

    public Task<UserRecord?> DeleteAsync(long id, bool dryRun, CancellationToken cancellationToken = default) => inner.DeleteAsync(id, dryRun, cancellationToken);

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}

/// <summary>Makes fresh, empty databases of one kind.</summary>
public interface IBackend
{
    string Name { get; }

    /// <summary>A new, empty database (not yet migrated) and the connection setting that names it.</summary>
    Task<(SqlUserStore Store, string Database)> NewDatabaseAsync();

    /// <summary>Another store on the same database.</summary>
    SqlUserStore Open(string database);
}

/// <summary>SQLite files in a temp folder removed at the end of the run.</summary>
public sealed class SqliteBackend : IBackend
{
    public static readonly SqliteBackend Instance = new();
    private const string Prefix = "conduit-users-sqlite-";
    private static readonly string s_root = CreateRoot();
    private static int s_next;

    /// <summary>
    /// A folder named after this process, removed when it exits; folders of earlier runs whose
    /// process is gone (a test host that was killed) are removed first.
    /// </summary>
    private static string CreateRoot()
    {
        foreach (var stale in Directory.GetDirectories(Path.GetTempPath(), Prefix + "*"))
        {
            if (int.TryParse(Path.GetFileName(stale)[Prefix.Length..], out var pid) && !Directory.Exists($"/proc/{pid}"))
            {
                try { Directory.Delete(stale, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            }
        }
        var root = Directory.CreateDirectory(Path.Combine(Path.GetTempPath(), Prefix + Environment.ProcessId)).FullName;
        AppDomain.CurrentDomain.ProcessExit += (_, _) => Directory.Delete(root, recursive: true);
        return root;
    }

    public string Name => "SQLite";

    public Task<(SqlUserStore Store, string Database)> NewDatabaseAsync()
    {
        var path = Path.Combine(s_root, $"users-{Interlocked.Increment(ref s_next)}.db");
        return Task.FromResult<(SqlUserStore, string)>((UserStores.Open(path, s_root), path));
    }

    public SqlUserStore Open(string database) => UserStores.Open(database, s_root);
}

/// <summary>
/// A real PostgreSQL server for the test run: initdb and pg_ctl in a temp folder, listening on
/// 127.0.0.1 with a free port, run as the `postgres` user when the tests run as root (postgres
/// refuses root), stopped and removed at the end. Each test gets its own database.
/// </summary>
public sealed class PostgresServer : IAsyncLifetime, IBackend
{
    private string _dir = "";
    private string _data = "";
    private string _bin = "";
    private int _next;

    public int Port { get; private set; }

    public string Name => "PostgreSQL";

    public string ConnectionString(string database) =>
        new NpgsqlConnectionStringBuilder { Host = "127.0.0.1", Port = Port, Username = "postgres", Database = database, Pooling = true }.ToString();

    public async Task InitializeAsync()
    {
        _bin = FindBinaries();
        _dir = Directory.CreateTempSubdirectory("conduit-users-pg-").FullName;
        _data = Path.Combine(_dir, "data");
        if (IsRoot) await Run("chown", "postgres", _dir);
        await RunAsPostgres("initdb", "-D", _data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-locale");
        Port = Ports.Free();
        await StartAsync();
    }

    /// <summary>Starts the server again after <see cref="StopAsync"/>, on the same port and data.</summary>
    public Task StartAsync() =>
        RunAsPostgres("pg_ctl", "-D", _data, "-w", "-t", "60", "-l", Path.Combine(_dir, "postgres.log"), "-o",
            $"-p {Port} -c listen_addresses=127.0.0.1 -k {_dir} -c fsync=off -c synchronous_commit=off -c full_page_writes=off", "start");

    /// <summary>
    /// Stops the server and waits until it is down: open sessions are terminated either way;
    /// <paramref name="immediate"/> skips the shutdown checkpoint, as a crash would (with this
    /// server's fsync=off, recent commits may then be lost).
    /// </summary>
    public Task StopAsync(bool immediate = true) => RunAsPostgres("pg_ctl", "-D", _data, "-m", immediate ? "immediate" : "fast", "-w", "stop");

    public async Task DisposeAsync()
    {
        if (_data.Length > 0 && File.Exists(Path.Combine(_data, "postmaster.pid")))
        {
            await StopAsync();
        }
        if (_dir.Length > 0) Directory.Delete(_dir, recursive: true);
    }

    public async Task<(SqlUserStore Store, string Database)> NewDatabaseAsync()
    {
        var name = $"users_{Interlocked.Increment(ref _next)}";
        await using (var connection = new NpgsqlConnection(ConnectionString("postgres")))
        {
            await connection.OpenAsync();
            await using var command = new NpgsqlCommand($"CREATE DATABASE {name}", connection);
            await command.ExecuteNonQueryAsync();
        }
        var database = ConnectionString(name);
        return (UserStores.Open(database, _dir), database);
    }

    public SqlUserStore Open(string database) => UserStores.Open(database, _dir);

    private static bool IsRoot => Environment.UserName == "root";

    private Task RunAsPostgres(string tool, params string[] args) =>
        IsRoot ? Run(RunUser, ["-u", "postgres", "--", Path.Combine(_bin, tool), .. args]) : Run(Path.Combine(_bin, tool), args);

    private static string RunUser => new[] { "/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser" }.FirstOrDefault(File.Exists) ?? "runuser";

    private static string FindBinaries()
    {
        var versions = Directory.Exists("/usr/lib/postgresql")
            ? Directory.GetDirectories("/usr/lib/postgresql").Where(d => File.Exists(Path.Combine(d, "bin", "initdb")))
                .OrderByDescending(d => int.TryParse(Path.GetFileName(d), out var v) ? v : 0).ToList()
            : [];
        if (versions.Count > 0) return Path.Combine(versions[0], "bin");
        throw new InvalidOperationException("PostgreSQL is not installed (apt-get install postgresql; scripts/test.sh does it).");
    }

    private static async Task Run(string file, params string[] args)
    {
        var (code, output, errors) = await Processes.Run(file, args);
        if (code != 0) throw new InvalidOperationException($"{file} {string.Join(' ', args)} exited {code}: {output}{errors}");
    }
}

[CollectionDefinition(Name)]
public sealed class PostgresCollection : ICollectionFixture<PostgresServer>
{
    public const string Name = "postgres";
}

/// <summary>Child processes run to completion: the conduit executable, the Python client, the PostgreSQL tools.</summary>
public static class Processes
{
    public static Task<(int ExitCode, string Output, string Errors)> Conduit(params string[] args) => Run("dotnet", [Paths.ConduitDll, .. args]);

    public static Task<(int ExitCode, string Output, string Errors)> Python(string script, params string[] args) => Run(Paths.Python, [Paths.PythonScript(script), .. args]);

    /// <summary>Runs to completion (at most 2 minutes) with stdin closed.</summary>
    public static async Task<(int ExitCode, string Output, string Errors)> Run(string file, params string[] args)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var arg in args) info.ArgumentList.Add(arg);
        info.Environment["DOTNET_NOLOGO"] = "1";
        using var process = Process.Start(info)!;
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not exit");
        }
        return (process.ExitCode, await stdout, await stderr);
    }
}
