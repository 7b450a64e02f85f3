using System.Net;
using System.Security.Cryptography;
using System.Text;
using Conduit.Grpc;
using Conduit.Protos.Accounts.V1;
using Grpc.Core;

namespace Conduit.Services.Accounts;

/// <summary>
/// accounts.v1.Accounts: token lookups for other services, and the operator RPCs. Mutating RPCs
/// honour dry run: everything is validated and the answer is the would-be result (a dry-run
/// CreateAccount or RotateToken answers a token that is never stored, so it never works).
/// </summary>
public sealed class AccountsService(IAccountStore store, AccountsOptions options, TimeProvider? time = null) : Protos.Accounts.V1.Accounts.AccountsBase
{
    public const int MaxNameLength = 200;
    private const string Domain = "accounts.conduit";

    private readonly TimeProvider _time = time ?? TimeProvider.System;

    public override async Task<GetByTokenResp> GetByToken(GetByTokenReq request, ServerCallContext context)
    {
        if (request.Token.Length == 0)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, "A token is required.", Details.BadRequest(("token", "required")));
        }
        var account = await store.FindByTokenHashAsync(AccountTokens.Hash(request.Token), context.CancellationToken).ConfigureAwait(false);
        if (account is null || account.Disabled)
        {
            throw RpcException.WithDetails(StatusCode.NotFound, "No enabled account has this token.", Details.ErrorInfo("TOKEN_UNKNOWN", Domain));
        }
        return new GetByTokenResp { Account = ToProto(account) };
    }

    [DryRunSupported]
    public override async Task<CreateAccountResp> CreateAccount(CreateAccountReq request, ServerCallContext context)
    {
        RequireOperator(context);
        var violations = new List<(string, string)>();
        ValidateName(request.Name, violations);
        if (request.MaxCacheKeys < 0) violations.Add(("max_cache_keys", "must be positive (0: the server's default)"));
        if (request.MaxValueBytes < 0) violations.Add(("max_value_bytes", "must be positive (0: the server's default)"));
        ThrowIfInvalid(violations);

        var token = AccountTokens.NewToken();
        var account = new AccountRecord(
            AccountTokens.NewId(),
            request.Name,
            request.MaxCacheKeys == 0 ? options.DefaultMaxCacheKeys : request.MaxCacheKeys,
            request.MaxValueBytes == 0 ? options.DefaultMaxValueBytes : request.MaxValueBytes,
            Disabled: false,
            _time.GetUtcNow().ToUnixTimeMilliseconds(),
            AccountTokens.Hash(token));
        if (!DryRun.IsRequested(context) && !await store.CreateAsync(account, context.CancellationToken).ConfigureAwait(false))
        {
            // 96 random bits of id and 256 of token: a collision is a broken random generator.
            throw new RpcException(new Status(StatusCode.Aborted, "The new account's id or token collided with an existing one; try again."));
        }
        return new CreateAccountResp { Account = ToProto(account), Token = token };
    }

    public override async Task<ListAccountsResp> ListAccounts(ListAccountsReq request, ServerCallContext context)
    {
        RequireOperator(context);
        var response = new ListAccountsResp();
        foreach (var account in await store.ListAsync(context.CancellationToken).ConfigureAwait(false))
        {
            response.Accounts.Add(ToProto(account));
        }
        return response;
    }

    [DryRunSupported]
    public override async Task<Account> UpdateAccount(UpdateAccountReq request, ServerCallContext context)
    {
        RequireOperator(context);
        var violations = new List<(string, string)>();
        if (request.HasName) ValidateName(request.Name, violations);
        if (request.HasMaxCacheKeys && request.MaxCacheKeys <= 0) violations.Add(("max_cache_keys", "must be positive"));
        if (request.HasMaxValueBytes && request.MaxValueBytes <= 0) violations.Add(("max_value_bytes", "must be positive"));
        ThrowIfInvalid(violations);
        var account = await GetOrThrowAsync(request.Id, context).ConfigureAwait(false);
        var updated = account with
        {
            Name = request.HasName ? request.Name : account.Name,
            MaxCacheKeys = request.HasMaxCacheKeys ? request.MaxCacheKeys : account.MaxCacheKeys,
            MaxValueBytes = request.HasMaxValueBytes ? request.MaxValueBytes : account.MaxValueBytes,
            Disabled = request.HasDisabled ? request.Disabled : account.Disabled,
        };
        if (!DryRun.IsRequested(context) && !await store.UpdateAsync(updated, context.CancellationToken).ConfigureAwait(false))
        {
            throw new RpcException(new Status(StatusCode.NotFound, $"No account has id '{ClientInput.Shorten(request.Id)}'."));
        }
        return ToProto(updated);
    }

    [DryRunSupported]
    public override async Task<RotateTokenResp> RotateToken(RotateTokenReq request, ServerCallContext context)
    {
        RequireOperator(context);
        var account = await GetOrThrowAsync(request.Id, context).ConfigureAwait(false);
        var token = AccountTokens.NewToken();
        var updated = account with { TokenHash = AccountTokens.Hash(token) };
        if (!DryRun.IsRequested(context) && !await store.UpdateAsync(updated, context.CancellationToken).ConfigureAwait(false))
        {
            throw new RpcException(new Status(StatusCode.NotFound, $"No account has id '{ClientInput.Shorten(request.Id)}'."));
        }
        return new RotateTokenResp { Account = ToProto(updated), Token = token };
    }

    public static Account ToProto(AccountRecord account) => new()
    {
        Id = account.Id,
        Name = account.Name,
        MaxCacheKeys = account.MaxCacheKeys,
        MaxValueBytes = account.MaxValueBytes,
        Disabled = account.Disabled,
        CreatedUnixMs = account.CreatedUnixMs,
    };

    private async Task<AccountRecord> GetOrThrowAsync(string id, ServerCallContext context)
    {
        if (id.Length == 0)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, "An account id is required.", Details.BadRequest(("id", "required")));
        }
        return await store.GetAsync(id, context.CancellationToken).ConfigureAwait(false)
            ?? throw new RpcException(new Status(StatusCode.NotFound, $"No account has id '{ClientInput.Shorten(id)}'."));
    }

    private static void ValidateName(string name, List<(string, string)> violations)
    {
        if (name.Length == 0 || name.Length > MaxNameLength) violations.Add(("name", $"1 to {MaxNameLength} characters"));
    }

    private static void ThrowIfInvalid(List<(string, string)> violations)
    {
        if (violations.Count > 0)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, "Invalid request: " + string.Join("; ", violations.Select(v => $"{v.Item1}: {v.Item2}")),
                Details.BadRequest([.. violations]));
        }
    }

    /// <summary>Headers a reverse proxy adds for the client it relays (RFC 7239, and the de facto ones).</summary>
    private static readonly string[] s_proxyHeaders = ["forwarded", "x-forwarded-for", "x-real-ip"];

    /// <summary>
    /// The operator RPCs: a caller with the operator role (the host's authentication gives it to
    /// the operator token, the policy file to whom it names); otherwise the admin token when one
    /// is configured, or loopback callers only. Loopback is a weak rule: a reverse proxy on the
    /// same host connects from loopback for everyone behind it. A call carrying a proxy's
    /// forwarding header is therefore refused, but a proxy that adds none cannot be told from a
    /// local operator: anything but a laptop sets Conduit:Security:OperatorToken (docs/cache.md).
    /// </summary>
    private void RequireOperator(ServerCallContext context)
    {
        if (CallIdentity.IsOperator(context)) return;
        if (options.AdminToken is { Length: > 0 } admin)
        {
            var given = BearerToken.From(context.RequestHeaders);
            if (given is null)
            {
                throw new RpcException(new Status(StatusCode.Unauthenticated, "This operator RPC needs 'authorization: Bearer <admin token>'."));
            }
            if (!CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(given)), SHA256.HashData(Encoding.UTF8.GetBytes(admin))))
            {
                throw new RpcException(new Status(StatusCode.PermissionDenied, "The token is not the admin token."));
            }
            return;
        }
        if (!IsLoopback(context.Peer) || s_proxyHeaders.Any(h => context.RequestHeaders.Get(h) is not null))
        {
            throw RpcException.WithDetails(StatusCode.PermissionDenied, "Operator RPCs are answered only to loopback callers not relayed by a proxy, unless an operator token is configured (Conduit:Security:OperatorToken).",
                Details.ErrorInfo("OPERATOR_LOOPBACK_ONLY", Domain));
        }
    }

    /// <summary>"ipv4:127.0.0.1:5000" or "ipv6:[::1]:5000".</summary>
    public static bool IsLoopback(string peer)
    {
        var address = peer;
        var colon = address.IndexOf(':', StringComparison.Ordinal);
        if (colon >= 0) address = address[(colon + 1)..];
        if (address.StartsWith('['))
        {
            var end = address.IndexOf(']', StringComparison.Ordinal);
            address = end > 0 ? address[1..end] : address;
        }
        else if (address.LastIndexOf(':') is var port and > 0)
        {
            address = address[..port];
        }
        return IPAddress.TryParse(address, out var ip) && IPAddress.IsLoopback(ip);
    }
}

/// <summary>
/// The account store's failures as statuses (registered in DI by the host, run by
/// ExceptionInterceptor): a store that cannot be reached (PostgreSQL down) is UNAVAILABLE with
/// RetryInfo, so the handlers carry no catch blocks of their own.
/// </summary>
public sealed class AccountsExceptionMapper : IExceptionMapper
{
    public RpcException? Map(Exception exception, ServerCallContext context) => exception switch
    {
        AccountStoreUnavailableException ex => RpcException.WithDetails(StatusCode.Unavailable, ex.Message,
            Details.RetryInfo(TimeSpan.FromSeconds(1)), Details.ErrorInfo("ACCOUNT_STORE_UNAVAILABLE", "accounts.conduit")),
        _ => null,
    };
}

/// <summary>The caller's token from `authorization: Bearer &lt;token&gt;`.</summary>
public static class BearerToken
{
    public const string Header = "authorization";

    public static string? From(Metadata headers)
    {
        var value = headers.GetValue(Header);
        if (value is null || !value.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)) return null;
        var token = value["Bearer ".Length..].Trim();
        return token.Length == 0 ? null : token;
    }

    public static Metadata.Entry Entry(string token) => new(Header, "Bearer " + token);
}
