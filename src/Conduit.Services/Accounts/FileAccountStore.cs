using System.Text.Json;
using System.Text.Json.Serialization;

namespace Conduit.Services.Accounts;

/// <summary>
/// Accounts in one JSON file (data folder/accounts/accounts.json), held in memory and rewritten
/// whole on every change: written to a temporary file, flushed to disk, then renamed over the
/// old one, so a crash leaves either the old or the new file, never a torn one. Meant for the
/// handful to thousands of accounts an operator manages by hand.
/// </summary>
public sealed class FileAccountStore : IAccountStore
{
    private readonly string _path;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private volatile Snapshot _snapshot;

    public FileAccountStore(string path)
    {
        _path = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(_path)!);
        List<AccountRecord> accounts;
        try
        {
            accounts = File.Exists(_path)
                ? JsonSerializer.Deserialize(File.ReadAllBytes(_path), AccountsJson.Default.AccountsFile)?.Accounts ?? []
                : [];
        }
        catch (JsonException ex)
        {
            throw new IOException($"The accounts file {_path} is not valid: {ex.Message}", ex);
        }
        _snapshot = new Snapshot(accounts);
    }

    public string FilePath => _path;

    public Task<AccountRecord?> FindByTokenHashAsync(string tokenHash, CancellationToken cancellationToken) =>
        Task.FromResult(_snapshot.ByTokenHash.GetValueOrDefault(tokenHash));

    public Task<AccountRecord?> GetAsync(string id, CancellationToken cancellationToken) =>
        Task.FromResult(_snapshot.ById.GetValueOrDefault(id));

    public Task<IReadOnlyList<AccountRecord>> ListAsync(CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<AccountRecord>>(_snapshot.All);

    public Task<bool> CreateAsync(AccountRecord account, CancellationToken cancellationToken) =>
        ChangeAsync(s => s.ById.ContainsKey(account.Id) || s.ByTokenHash.ContainsKey(account.TokenHash) ? null : [.. s.All, account], cancellationToken);

    public Task<bool> UpdateAsync(AccountRecord account, CancellationToken cancellationToken) =>
        ChangeAsync(s =>
        {
            if (!s.ById.ContainsKey(account.Id)) return null;
            if (s.ByTokenHash.TryGetValue(account.TokenHash, out var holder) && holder.Id != account.Id) return null;
            return s.All.Select(a => a.Id == account.Id ? account : a).ToList();
        }, cancellationToken);

    private async Task<bool> ChangeAsync(Func<Snapshot, List<AccountRecord>?> change, CancellationToken cancellationToken)
    {
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var next = change(_snapshot);
            if (next is null) return false;
            var temp = _path + ".tmp";
            await using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                await JsonSerializer.SerializeAsync(file, new AccountsFile { Accounts = next }, AccountsJson.Default.AccountsFile, CancellationToken.None).ConfigureAwait(false);
                file.Flush(flushToDisk: true);
            }
            File.Move(temp, _path, overwrite: true);
            _snapshot = new Snapshot(next);
            return true;
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private sealed class Snapshot
    {
        public Snapshot(List<AccountRecord> accounts)
        {
            All = accounts;
            ById = accounts.ToDictionary(a => a.Id, StringComparer.Ordinal);
            ByTokenHash = accounts.ToDictionary(a => a.TokenHash, StringComparer.Ordinal);
        }

        public List<AccountRecord> All { get; }

        public Dictionary<string, AccountRecord> ById { get; }

        public Dictionary<string, AccountRecord> ByTokenHash { get; }
    }
}

/// <summary>The file's format: {"version": 1, "accounts": [{...}]}.</summary>
internal sealed class AccountsFile
{
    public int Version { get; set; } = 1;

    public List<AccountRecord> Accounts { get; set; } = [];
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true)]
[JsonSerializable(typeof(AccountsFile))]
internal sealed partial class AccountsJson : JsonSerializerContext
{
}
