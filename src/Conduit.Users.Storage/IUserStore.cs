namespace Conduit.Users.Storage;

/// <summary>A stored user. Ids are assigned by the database, increasing, never reused.</summary>
public sealed record UserRecord(long Id, string Name, string Email, long CreatedUnixMs, long UpdatedUnixMs);

/// <summary>A user to create: already validated by the caller.</summary>
public sealed record NewUser(string Name, string Email);

/// <summary>
/// Where the user directory lives. Every implementation applies the same schema (see
/// <see cref="Schema"/>) and gives the same guarantees: emails unique case-insensitively, ids
/// increasing in commit order (a user that becomes visible never has a smaller id than one
/// already visible), batches created all-or-nothing, dry runs that change nothing.
/// </summary>
public interface IUserStore : IAsyncDisposable
{
    /// <summary>What this store is, for logs: "SQLite /path/users.db", "PostgreSQL host:port/db".</summary>
    string Description { get; }

    /// <summary>Brings the schema up to date (safe to run from several processes at once).</summary>
    Task MigrateAsync(CancellationToken cancellationToken = default);

    Task<UserRecord?> GetAsync(long id, CancellationToken cancellationToken = default);

    /// <summary>The user whose email equals <paramref name="email"/> case-insensitively.</summary>
    Task<UserRecord?> GetByEmailAsync(string email, CancellationToken cancellationToken = default);

    /// <summary>
    /// Users with id greater than <paramref name="afterId"/> in id order, skipping
    /// <paramref name="skip"/> of them, at most <paramref name="limit"/>. Rows are read from the
    /// database as the caller enumerates; cancelling stops the query.
    /// </summary>
    IAsyncEnumerable<UserRecord> ListAsync(long afterId, long skip, int limit, CancellationToken cancellationToken = default);

    /// <summary>
    /// Creates every user in one transaction, or none. Throws <see cref="EmailTakenException"/>
    /// (naming the index) when an email is already stored or appears twice in the batch. A dry
    /// run checks the same and returns the users with id 0, changing nothing.
    /// </summary>
    Task<IReadOnlyList<UserRecord>> CreateAsync(IReadOnlyList<NewUser> users, bool dryRun, CancellationToken cancellationToken = default);

    /// <summary>Changes the name and/or email (null: keep). Null when there is no such user.</summary>
    Task<UserRecord?> UpdateAsync(long id, string? name, string? email, bool dryRun, CancellationToken cancellationToken = default);

    /// <summary>Deletes the user and returns it as it was; null when there is no such user.</summary>
    Task<UserRecord?> DeleteAsync(long id, bool dryRun, CancellationToken cancellationToken = default);
}

/// <summary>An email is already used by another user (or twice in one batch).</summary>
public sealed class EmailTakenException(string email, int index, bool withinBatch)
    : Exception(withinBatch
        ? $"The email '{email}' appears twice in the batch (again at index {index})."
        : $"A user with the email '{email}' already exists.")
{
    public string Email { get; } = email;

    /// <summary>The position in the batch of the user that could not be stored (0 for single-user operations).</summary>
    public int Index { get; } = index;

    public bool WithinBatch { get; } = withinBatch;
}

/// <summary>The database was migrated by a newer Conduit than this one.</summary>
public sealed class SchemaVersionException(int found, int known)
    : Exception($"The users database has schema version {found}; this Conduit knows versions up to {known}. Run a newer Conduit.")
{
    public int Found { get; } = found;

    public int Known { get; } = known;
}
