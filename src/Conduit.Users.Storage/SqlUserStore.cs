using System.Data;
using System.Data.Common;
using System.Runtime.CompilerServices;

namespace Conduit.Users.Storage;

/// <summary>What differs between the SQL databases the user directory runs on.</summary>
public abstract class SqlDialect
{
    /// <summary>The column definition of an auto-assigned, never-reused int64 primary key.</summary>
    public abstract string IdentityPrimaryKey { get; }

    /// <summary>Whether the error is a unique-constraint violation.</summary>
    public abstract bool IsUniqueViolation(DbException exception);

    /// <summary>
    /// Called first in every writing transaction: serializes writers, so ids are assigned and
    /// committed in the same order (no reader ever sees id 11 before id 10 commits).
    /// </summary>
    public abstract Task LockForWriteAsync(DbConnection connection, DbTransaction transaction, CancellationToken cancellationToken);

    /// <summary>Replaces the dialect tokens of a migration.</summary>
    public string Expand(string sql) => sql.Replace("{IdentityPrimaryKey}", IdentityPrimaryKey, StringComparison.Ordinal);
}

/// <summary>
/// The user store on any ADO.NET database: all SQL and the migration procedure live here, once;
/// SQLite and PostgreSQL differ only by their <see cref="SqlDialect"/> and how a connection is opened.
/// </summary>
public abstract class SqlUserStore(SqlDialect dialect, TimeProvider? time) : IUserStore
{
    private const string Columns = "id, name, email, created_unix_ms, updated_unix_ms";

    private readonly TimeProvider _time = time ?? TimeProvider.System;

    public abstract string Description { get; }

    /// <summary>An open connection; the caller disposes it.</summary>
    protected abstract ValueTask<DbConnection> OpenAsync(CancellationToken cancellationToken);

    /// <summary>Starts the transaction of a write (SQLite: BEGIN IMMEDIATE).</summary>
    protected virtual ValueTask<DbTransaction> BeginWriteAsync(DbConnection connection, CancellationToken cancellationToken) =>
        connection.BeginTransactionAsync(IsolationLevel.ReadCommitted, cancellationToken);

    public abstract ValueTask DisposeAsync();

    public async Task MigrateAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var tx = await BeginWriteAsync(connection, cancellationToken).ConfigureAwait(false);
        await dialect.LockForWriteAsync(connection, tx, cancellationToken).ConfigureAwait(false);
        await ExecuteAsync(connection, tx, Schema.MigrationsTable, cancellationToken).ConfigureAwait(false);
        var current = 0;
        await using (var command = Command(connection, tx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))
        {
            current = Convert.ToInt32(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false), System.Globalization.CultureInfo.InvariantCulture);
        }
        if (current > Schema.LatestVersion) throw new SchemaVersionException(current, Schema.LatestVersion);
        foreach (var migration in Schema.Migrations.Where(m => m.Version > current))
        {
            await ExecuteAsync(connection, tx, dialect.Expand(migration.Sql), cancellationToken).ConfigureAwait(false);
            await using var record = Command(connection, tx,
                "INSERT INTO schema_migrations (version, description, applied_unix_ms) VALUES (@version, @description, @now)",
                ("version", migration.Version), ("description", migration.Description), ("now", Now()));
            await record.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
        await tx.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The schema version the database is at (0 before any migration).</summary>
    public async Task<int> SchemaVersionAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var command = Command(connection, null, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
        return Convert.ToInt32(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false), System.Globalization.CultureInfo.InvariantCulture);
    }

    public async Task<UserRecord?> GetAsync(long id, CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        return await QuerySingleAsync(connection, null, $"SELECT {Columns} FROM users WHERE id = @id", cancellationToken, ("id", id)).ConfigureAwait(false);
    }

    public async Task<UserRecord?> GetByEmailAsync(string email, CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        return await QuerySingleAsync(connection, null, $"SELECT {Columns} FROM users WHERE email_key = @key", cancellationToken, ("key", Schema.EmailKey(email))).ConfigureAwait(false);
    }

    public async IAsyncEnumerable<UserRecord> ListAsync(long afterId, long skip, int limit, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var command = Command(connection, null,
            $"SELECT {Columns} FROM users WHERE id > @after ORDER BY id LIMIT @limit OFFSET @skip",
            ("after", afterId), ("limit", (long)limit), ("skip", skip));
        await using var reader = await command.ExecuteReaderAsync(CommandBehavior.SequentialAccess, cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            yield return Read(reader);
        }
    }

    public async Task<IReadOnlyList<UserRecord>> CreateAsync(IReadOnlyList<NewUser> users, bool dryRun, CancellationToken cancellationToken = default)
    {
        var keys = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < users.Count; i++)
        {
            if (!keys.Add(Schema.EmailKey(users[i].Email))) throw new EmailTakenException(users[i].Email, i, withinBatch: true);
        }
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var tx = await BeginWriteAsync(connection, cancellationToken).ConfigureAwait(false);
        await dialect.LockForWriteAsync(connection, tx, cancellationToken).ConfigureAwait(false);
        var now = Now();
        var created = new List<UserRecord>(users.Count);
        if (dryRun)
        {
            for (var i = 0; i < users.Count; i++)
            {
                if (await EmailOwnerAsync(connection, tx, users[i].Email, cancellationToken).ConfigureAwait(false) is not null)
                {
                    throw new EmailTakenException(users[i].Email, i, withinBatch: false);
                }
                created.Add(new UserRecord(0, users[i].Name, users[i].Email, now, now));
            }
            await tx.RollbackAsync(cancellationToken).ConfigureAwait(false);
            return created;
        }
        try
        {
            if (connection.CanCreateBatch) await InsertBatchedAsync(connection, tx, users, now, created, cancellationToken).ConfigureAwait(false);
            else await InsertOneByOneAsync(connection, tx, users, now, created, cancellationToken).ConfigureAwait(false);
        }
        catch (IndexedUniqueViolation violation)
        {
            throw new EmailTakenException(users[violation.Index].Email, violation.Index, withinBatch: false); // disposing tx rolls the batch back
        }
        await tx.CommitAsync(cancellationToken).ConfigureAwait(false);
        return created;
    }

    private const string InsertSql =
        "INSERT INTO users (name, email, email_key, created_unix_ms, updated_unix_ms) VALUES (@name, @email, @key, @now, @now) RETURNING id";

    /// <summary>Rows per round trip when the provider batches statements (Npgsql; SQLite is in-process anyway).</summary>
    private const int InsertBatchSize = 500;

    private sealed class IndexedUniqueViolation(int index) : Exception
    {
        public int Index { get; } = index;
    }

    private async Task InsertOneByOneAsync(DbConnection connection, DbTransaction tx, IReadOnlyList<NewUser> users, long now, List<UserRecord> created, CancellationToken cancellationToken)
    {
        await using var insert = Command(connection, tx, InsertSql, ("name", ""), ("email", ""), ("key", ""), ("now", now));
        for (var i = 0; i < users.Count; i++)
        {
            insert.Parameters[0].Value = users[i].Name;
            insert.Parameters[1].Value = users[i].Email;
            insert.Parameters[2].Value = Schema.EmailKey(users[i].Email);
            try
            {
                var id = Convert.ToInt64(await insert.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false), System.Globalization.CultureInfo.InvariantCulture);
                created.Add(new UserRecord(id, users[i].Name, users[i].Email, now, now));
            }
            catch (DbException ex) when (dialect.IsUniqueViolation(ex))
            {
                throw new IndexedUniqueViolation(i);
            }
        }
    }

    /// <summary>
    /// The same statements, several per round trip: still one INSERT per user in request order (ids
    /// follow the request order), and a failing statement still names its user (DbException.BatchCommand).
    /// </summary>
    private async Task InsertBatchedAsync(DbConnection connection, DbTransaction tx, IReadOnlyList<NewUser> users, long now, List<UserRecord> created, CancellationToken cancellationToken)
    {
        for (var start = 0; start < users.Count; start += InsertBatchSize)
        {
            var count = Math.Min(InsertBatchSize, users.Count - start);
            await using var batch = connection.CreateBatch();
            batch.Transaction = tx;
            for (var i = start; i < start + count; i++)
            {
                var command = batch.CreateBatchCommand();
                command.CommandText = InsertSql;
                AddParameter(command.CreateParameter(), command.Parameters, "name", users[i].Name);
                AddParameter(command.CreateParameter(), command.Parameters, "email", users[i].Email);
                AddParameter(command.CreateParameter(), command.Parameters, "key", Schema.EmailKey(users[i].Email));
                AddParameter(command.CreateParameter(), command.Parameters, "now", now);
                batch.BatchCommands.Add(command);
            }
            // Results are consumed in statement order, and an error surfaces when its statement's
            // result is reached: `current` is the user whose statement that is.
            var current = start;
            try
            {
                await using var reader = await batch.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                for (; current < start + count; current++)
                {
                    if (current > start) await reader.NextResultAsync(cancellationToken).ConfigureAwait(false);
                    if (!await reader.ReadAsync(cancellationToken).ConfigureAwait(false)) throw new InvalidOperationException("INSERT ... RETURNING returned no row.");
                    created.Add(new UserRecord(reader.GetInt64(0), users[current].Name, users[current].Email, now, now));
                }
            }
            catch (DbException ex) when (dialect.IsUniqueViolation(ex))
            {
                throw new IndexedUniqueViolation(ex.BatchCommand is { } failed ? start + batch.BatchCommands.IndexOf(failed) : current);
            }
        }
    }

    public async Task<UserRecord?> UpdateAsync(long id, string? name, string? email, bool dryRun, CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var tx = await BeginWriteAsync(connection, cancellationToken).ConfigureAwait(false);
        await dialect.LockForWriteAsync(connection, tx, cancellationToken).ConfigureAwait(false);
        var current = await QuerySingleAsync(connection, tx, $"SELECT {Columns} FROM users WHERE id = @id", cancellationToken, ("id", id)).ConfigureAwait(false);
        if (current is null) return null;
        var updated = current with { Name = name ?? current.Name, Email = email ?? current.Email, UpdatedUnixMs = Now() };
        if (await EmailOwnerAsync(connection, tx, updated.Email, cancellationToken).ConfigureAwait(false) is { } owner && owner != id)
        {
            throw new EmailTakenException(updated.Email, 0, withinBatch: false);
        }
        if (dryRun)
        {
            await tx.RollbackAsync(cancellationToken).ConfigureAwait(false);
            return updated;
        }
        await using var command = Command(connection, tx,
            "UPDATE users SET name = @name, email = @email, email_key = @key, updated_unix_ms = @now WHERE id = @id",
            ("name", updated.Name), ("email", updated.Email), ("key", Schema.EmailKey(updated.Email)), ("now", updated.UpdatedUnixMs), ("id", id));
        try
        {
            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (DbException ex) when (dialect.IsUniqueViolation(ex))
        {
            throw new EmailTakenException(updated.Email, 0, withinBatch: false);
        }
        await tx.CommitAsync(cancellationToken).ConfigureAwait(false);
        return updated;
    }

    public async Task<UserRecord?> DeleteAsync(long id, bool dryRun, CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var tx = await BeginWriteAsync(connection, cancellationToken).ConfigureAwait(false);
        await dialect.LockForWriteAsync(connection, tx, cancellationToken).ConfigureAwait(false);
        var sql = dryRun ? $"SELECT {Columns} FROM users WHERE id = @id" : $"DELETE FROM users WHERE id = @id RETURNING {Columns}";
        var deleted = await QuerySingleAsync(connection, tx, sql, cancellationToken, ("id", id)).ConfigureAwait(false);
        if (dryRun) await tx.RollbackAsync(cancellationToken).ConfigureAwait(false);
        else await tx.CommitAsync(cancellationToken).ConfigureAwait(false);
        return deleted;
    }

    private long Now() => _time.GetUtcNow().ToUnixTimeMilliseconds();

    private static async Task<long?> EmailOwnerAsync(DbConnection connection, DbTransaction tx, string email, CancellationToken cancellationToken)
    {
        await using var command = Command(connection, tx, "SELECT id FROM users WHERE email_key = @key", ("key", Schema.EmailKey(email)));
        var value = await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
        return value is null or DBNull ? null : Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture);
    }

    private static async Task<UserRecord?> QuerySingleAsync(DbConnection connection, DbTransaction? tx, string sql, CancellationToken cancellationToken, params (string Name, object Value)[] parameters)
    {
        await using var command = Command(connection, tx, sql, parameters);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        return await reader.ReadAsync(cancellationToken).ConfigureAwait(false) ? Read(reader) : null;
    }

    private static UserRecord Read(DbDataReader reader) =>
        new(reader.GetInt64(0), reader.GetString(1), reader.GetString(2), reader.GetInt64(3), reader.GetInt64(4));

    private static async Task ExecuteAsync(DbConnection connection, DbTransaction? tx, string sql, CancellationToken cancellationToken)
    {
        await using var command = Command(connection, tx, sql);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    private static DbCommand Command(DbConnection connection, DbTransaction? tx, string sql, params (string Name, object Value)[] parameters)
    {
        var command = connection.CreateCommand();
        command.CommandText = sql;
        command.Transaction = tx;
        foreach (var (name, value) in parameters) AddParameter(command.CreateParameter(), command.Parameters, name, value);
        return command;
    }

    private static void AddParameter(DbParameter parameter, DbParameterCollection parameters, string name, object value)
    {
        parameter.ParameterName = "@" + name;
        parameter.Value = value;
        parameters.Add(parameter);
    }
}
