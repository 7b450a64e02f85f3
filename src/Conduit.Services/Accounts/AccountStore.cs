using System.Security.Cryptography;
using System.Text;

namespace Conduit.Services.Accounts;

/// <summary>One account as stored: its quotas and the SHA-256 hash of its token (never the token).</summary>
public sealed record AccountRecord(
    string Id,
    string Name,
    long MaxCacheKeys,
    long MaxValueBytes,
    bool Disabled,
    long CreatedUnixMs,
    string TokenHash);

/// <summary>
/// Where accounts live. The embedded default is <see cref="FileAccountStore"/> (a JSON file in
/// the data folder); <see cref="PostgresAccountStore"/> when a connection string is configured.
/// </summary>
public interface IAccountStore
{
    Task<AccountRecord?> FindByTokenHashAsync(string tokenHash, CancellationToken cancellationToken);

    Task<AccountRecord?> GetAsync(string id, CancellationToken cancellationToken);

    Task<IReadOnlyList<AccountRecord>> ListAsync(CancellationToken cancellationToken);

    /// <summary>Adds a new account; false when its id or token hash is already taken.</summary>
    Task<bool> CreateAsync(AccountRecord account, CancellationToken cancellationToken);

    /// <summary>Replaces the account with the same id; false when there is none.</summary>
    Task<bool> UpdateAsync(AccountRecord account, CancellationToken cancellationToken);
}

/// <summary>Account tokens: 32 random bytes, and the hash they are stored and looked up by.</summary>
public static class AccountTokens
{
    public const string Prefix = "cdt_";

    /// <summary>A new token: "cdt_" + 43 base64url characters (256 random bits).</summary>
    public static string NewToken() => Prefix + Base64Url(RandomNumberGenerator.GetBytes(32));

    /// <summary>A new account id: "acc_" + 16 base64url characters.</summary>
    public static string NewId() => "acc_" + Base64Url(RandomNumberGenerator.GetBytes(12));

    /// <summary>
    /// SHA-256 of the token, lower-case hex. A token carries 256 random bits, so a fast hash is
    /// enough: nothing can be brute-forced from it, and lookups stay one index probe.
    /// </summary>
    public static string Hash(string token) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(token)));

    private static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}

/// <summary>The account store cannot be reached (a retry may work).</summary>
public sealed class AccountStoreUnavailableException(string message, Exception? inner = null) : Exception(message, inner)
{
}
