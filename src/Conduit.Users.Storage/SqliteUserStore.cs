using System.Data.Common;
using Microsoft.Data.Sqlite;

namespace Conduit.Users.Storage;

/// <summary>
/// The embedded default: one SQLite file (WAL journal, so reads never wait for a write; writes
/// take the database lock at BEGIN IMMEDIATE, which is what orders ids with commits).
/// </summary>
public sealed class SqliteUserStore : SqlUserStore
{
    private static int s_initialized;
    private readonly string _connectionString;

    public SqliteUserStore(string connectionString, TimeProvider? time = null) : base(new SqliteDialect(), time)
    {
        if (Interlocked.Exchange(ref s_initialized, 1) == 0) SQLitePCL.Batteries_V2.Init();
        var builder = new SqliteConnectionStringBuilder(connectionString) { Mode = SqliteOpenMode.ReadWriteCreate, Pooling = true };
        _connectionString = builder.ToString();
        Path = builder.DataSource;
    }

    /// <summary>A store in the file at <paramref name="path"/> (created with its folder when missing).</summary>
    public static SqliteUserStore ForFile(string path, TimeProvider? time = null)
    {
        var full = System.IO.Path.GetFullPath(path);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        return new SqliteUserStore(new SqliteConnectionStringBuilder { DataSource = full }.ToString(), time);
    }

    public string Path { get; }

    public override string Description => "SQLite " + Path;

    protected override async ValueTask<DbConnection> OpenAsync(CancellationToken cancellationToken)
    {
        var connection = new SqliteConnection(_connectionString);
        try
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
            using var pragma = connection.CreateCommand();
            pragma.CommandText = "PRAGMA journal_mode = WAL;";
            await pragma.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            return connection;
        }
        catch
        {
            // Not back into the pool: a handle on a file that is not a database (or was replaced
            // since) would fail every later call, even after the file is fixed.
            SqliteConnection.ClearPool(connection);
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    protected override ValueTask<DbTransaction> BeginWriteAsync(DbConnection connection, CancellationToken cancellationToken) =>
        ValueTask.FromResult<DbTransaction>(((SqliteConnection)connection).BeginTransaction(deferred: false)); // BEGIN IMMEDIATE

    public override ValueTask DisposeAsync()
    {
        using var connection = new SqliteConnection(_connectionString);
        SqliteConnection.ClearPool(connection); // closes the pooled handles: the file can be moved or deleted
        return ValueTask.CompletedTask;
    }

    private sealed class SqliteDialect : SqlDialect
    {
        // AUTOINCREMENT: ids are never reused, even after the highest one is deleted.
        public override string IdentityPrimaryKey => "INTEGER PRIMARY KEY AUTOINCREMENT";

        public override bool IsUniqueViolation(DbException exception) =>
            exception is SqliteException { SqliteErrorCode: 19, SqliteExtendedErrorCode: 2067 or 1555 }; // SQLITE_CONSTRAINT_UNIQUE / _PRIMARYKEY

        // BEGIN IMMEDIATE already holds SQLite's single write lock.
        public override Task LockForWriteAsync(DbConnection connection, DbTransaction transaction, CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
