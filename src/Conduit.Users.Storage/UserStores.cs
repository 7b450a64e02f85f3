using System.Data.Common;

namespace Conduit.Users.Storage;

/// <summary>Chooses the store from one setting.</summary>
public static class UserStores
{
    public const string DefaultFileName = "users.db";

    /// <summary>
    /// <paramref name="database"/> empty: SQLite in <paramref name="dataDir"/>/users.db. A
    /// connection string with a Host (or Server) key: PostgreSQL ("Host=127.0.0.1;Port=5432;
    /// Database=conduit;Username=conduit"). Anything else: a SQLite file path or a SQLite
    /// connection string ("Data Source=...").
    /// </summary>
    public static SqlUserStore Open(string? database, string dataDir, TimeProvider? time = null)
    {
        if (string.IsNullOrWhiteSpace(database)) return SqliteUserStore.ForFile(Path.Combine(dataDir, DefaultFileName), time);
        if (IsPostgres(database)) return new PostgresUserStore(database, time);
        if (database.Contains('=', StringComparison.Ordinal)) return new SqliteUserStore(database, time);
        return SqliteUserStore.ForFile(database, time);
    }

    public static bool IsPostgres(string database)
    {
        if (!database.Contains('=', StringComparison.Ordinal)) return false;
        try
        {
            var builder = new DbConnectionStringBuilder { ConnectionString = database };
            return builder.ContainsKey("Host") || builder.ContainsKey("Server");
        }
        catch (ArgumentException)
        {
            return false;
        }
    }
}
