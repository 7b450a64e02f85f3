namespace Conduit.Users.Storage;

/// <summary>
/// The one schema of the user directory, as an ordered list of migrations shared by every SQL
/// dialect. A migration's SQL may use the tokens a <see cref="SqlDialect"/> fills in (column
/// types that differ between databases); everything else is the same text everywhere.
/// Migrations are append-only: never edit one that has shipped, add the next version.
/// </summary>
public static class Schema
{
    public sealed record Migration(int Version, string Description, string Sql);

    /// <summary>The table that records which migrations a database has.</summary>
    internal const string MigrationsTable = """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_unix_ms BIGINT NOT NULL
        )
        """;

    public static IReadOnlyList<Migration> Migrations { get; } =
    [
        new(1, "users: id, name, email and its case-insensitive unique key, timestamps", """
            CREATE TABLE users (
                id {IdentityPrimaryKey},
                name TEXT NOT NULL,
                email TEXT NOT NULL,
                email_key TEXT NOT NULL,
                created_unix_ms BIGINT NOT NULL,
                updated_unix_ms BIGINT NOT NULL
            );
            CREATE UNIQUE INDEX users_email_key ON users (email_key);
            """),
    ];

    public static int LatestVersion => Migrations[^1].Version;

    /// <summary>
    /// The key that makes emails unique case-insensitively: computed here, in one place, rather
    /// than with each database's own lower(), whose Unicode rules differ (SQLite's folds ASCII only).
    /// </summary>
    public static string EmailKey(string email) => email.ToLowerInvariant();
}
