namespace Conduit.Services.Accounts;

/// <summary>Settings of the Accounts service, bound from configuration section "Conduit:Accounts".</summary>
public sealed class AccountsOptions
{
    public const string Section = "Conduit:Accounts";

    /// <summary>
    /// A PostgreSQL connection string (Npgsql format: "Host=...;Username=...;Password=...;Database=...").
    /// Null (the default): accounts live in a file under the data folder.
    /// </summary>
    public string? ConnectionString { get; set; }

    /// <summary>The accounts file; null: &lt;data folder&gt;/accounts/accounts.json.</summary>
    public string? FilePath { get; set; }

    /// <summary>
    /// The bearer token the operator RPCs (create, list, update, rotate) need. Null (the default):
    /// they are answered only to callers on a loopback address. `conduit serve` sets it from the
    /// one operator token setting, Conduit:Security:OperatorToken (this key is its older name).
    /// </summary>
    public string? AdminToken { get; set; }

    /// <summary>max_cache_keys of an account created without one.</summary>
    public long DefaultMaxCacheKeys { get; set; } = 10_000;

    /// <summary>max_value_bytes of an account created without one.</summary>
    public long DefaultMaxValueBytes { get; set; } = 1024 * 1024;
}
