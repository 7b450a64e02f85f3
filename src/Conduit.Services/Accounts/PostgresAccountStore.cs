using Npgsql;

namespace Conduit.Services.Accounts;

/// <summary>
/// Accounts in PostgreSQL (table conduit_accounts, created when missing), so several
/// `conduit serve` instances share them. Token hashes are unique and indexed.
/// </summary>
public sealed class PostgresAccountStore : IAccountStore, IAsyncDisposable
{
    private const string Columns = "id, name, max_cache_keys, max_value_bytes, disabled, created_unix_ms, token_hash";
    private readonly NpgsqlDataSource _dataSource;
    private Task? _schema;

    public PostgresAccountStore(string connectionString)
    {
        _dataSource = NpgsqlDataSource.Create(connectionString);
    }

    public async Task<AccountRecord?> FindByTokenHashAsync(string tokenHash, CancellationToken cancellationToken) =>
        (await QueryAsync($"SELECT {Columns} FROM conduit_accounts WHERE token_hash = $1", [tokenHash], cancellationToken).ConfigureAwait(false)).FirstOrDefault();

    public async Task<AccountRecord?> GetAsync(string id, CancellationToken cancellationToken) =>
        (await QueryAsync($"SELECT {Columns} FROM conduit_accounts WHERE id = $1", [id], cancellationToken).ConfigureAwait(false)).FirstOrDefault();

    public Task<IReadOnlyList<AccountRecord>> ListAsync(CancellationToken cancellationToken) =>
        QueryAsync($"SELECT {Columns} FROM conduit_accounts ORDER BY created_unix_ms, id", [], cancellationToken);

    public async Task<bool> CreateAsync(AccountRecord account, CancellationToken cancellationToken) =>
        await ExecuteAsync($"INSERT INTO conduit_accounts ({Columns}) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            Parameters(account), cancellationToken).ConfigureAwait(false) == 1;

    public async Task<bool> UpdateAsync(AccountRecord account, CancellationToken cancellationToken)
    {
        try
        {
            return await ExecuteAsync("UPDATE conduit_accounts SET name = $2, max_cache_keys = $3, max_value_bytes = $4, disabled = $5, created_unix_ms = $6, token_hash = $7 WHERE id = $1",
                Parameters(account), cancellationToken).ConfigureAwait(false) == 1;
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.UniqueViolation)
        {
            return false;
        }
    }

    public ValueTask DisposeAsync() => _dataSource.DisposeAsync();

    private static object[] Parameters(AccountRecord a) => [a.Id, a.Name, a.MaxCacheKeys, a.MaxValueBytes, a.Disabled, a.CreatedUnixMs, a.TokenHash];

    private async Task CreateSchemaAsync()
    {
        await using var command = _dataSource.CreateCommand("""
            CREATE TABLE IF NOT EXISTS conduit_accounts (
              id text PRIMARY KEY,
              name text NOT NULL,
              max_cache_keys bigint NOT NULL,
              max_value_bytes bigint NOT NULL,
              disabled boolean NOT NULL,
              created_unix_ms bigint NOT NULL,
              token_hash text NOT NULL UNIQUE)
            """);
        await command.ExecuteNonQueryAsync().ConfigureAwait(false);
    }

    private async Task EnsureSchemaAsync()
    {
        var schema = Volatile.Read(ref _schema);
        if (schema is null)
        {
            var created = CreateSchemaAsync();
            schema = Interlocked.CompareExchange(ref _schema, created, null) ?? created;
        }
        try
        {
            await schema.ConfigureAwait(false);
        }
        catch (NpgsqlException ex)
        {
            // Tried again on the next call: the database may have been down.
            _ = Interlocked.CompareExchange(ref _schema, null, schema);
            throw new AccountStoreUnavailableException($"PostgreSQL: {ex.Message}", ex);
        }
    }

    private async Task<int> ExecuteAsync(string sql, object[] parameters, CancellationToken cancellationToken)
    {
        await EnsureSchemaAsync().ConfigureAwait(false);
        await using var command = _dataSource.CreateCommand(sql);
        foreach (var p in parameters) command.Parameters.Add(new NpgsqlParameter { Value = p });
        try
        {
            return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (NpgsqlException ex) when (ex is not PostgresException)
        {
            throw new AccountStoreUnavailableException($"PostgreSQL: {ex.Message}", ex);
        }
    }

    private async Task<IReadOnlyList<AccountRecord>> QueryAsync(string sql, object[] parameters, CancellationToken cancellationToken)
    {
        await EnsureSchemaAsync().ConfigureAwait(false);
        await using var command = _dataSource.CreateCommand(sql);
        foreach (var p in parameters) command.Parameters.Add(new NpgsqlParameter { Value = p });
        try
        {
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            var result = new List<AccountRecord>();
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                result.Add(new AccountRecord(reader.GetString(0), reader.GetString(1), reader.GetInt64(2), reader.GetInt64(3), reader.GetBoolean(4), reader.GetInt64(5), reader.GetString(6)));
            }
            return result;
        }
        catch (NpgsqlException ex) when (ex is not PostgresException)
        {
            throw new AccountStoreUnavailableException($"PostgreSQL: {ex.Message}", ex);
        }
    }
}
