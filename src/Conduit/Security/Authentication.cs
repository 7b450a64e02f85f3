using System.Security.Claims;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Threading.RateLimiting;
using Conduit.Grpc;
using Conduit.Services.Cache;
using Grpc.Core;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;

namespace Conduit.Security;

/// <summary>The principals of a call, one per call: the operator, an account, or a client certificate's subject.</summary>
public static class Principals
{
    public const string Operator = "operator";
    public const string AccountPrefix = "account:";
    public const string CertificatePrefix = "cert:";
    public const string AccountRole = "account";

    public static ClaimsPrincipal Create(string name, string scheme, params string[] roles)
    {
        var identity = new ClaimsIdentity(scheme, ClaimTypes.Name, ClaimTypes.Role);
        identity.AddClaim(new Claim(ClaimTypes.Name, name));
        foreach (var role in roles) identity.AddClaim(new Claim(ClaimTypes.Role, role));
        return new ClaimsPrincipal(identity);
    }

    /// <summary>Why authentication failed for this request (an unknown token; Accounts unreachable), if it did.</summary>
    public static RpcException? Failure(HttpContext http) => http.Items.TryGetValue(FailureKey, out var value) ? value as RpcException : null;

    internal static void SetFailure(HttpContext http, RpcException failure) => http.Items[FailureKey] = failure;

    private static readonly object FailureKey = new();
}

public sealed class TokenAuthenticationOptions : AuthenticationSchemeOptions
{
    public string? OperatorToken { get; set; }
}

/// <summary>
/// `authorization: Bearer &lt;token&gt;`: the operator token (principal "operator", role
/// "operator"), or an account's token resolved through the Accounts directory the cache uses
/// (principal "account:&lt;id&gt;", role "account"). No header: no result, so another scheme may answer.
/// </summary>
public sealed class TokenAuthenticationHandler(
    IOptionsMonitor<TokenAuthenticationOptions> options, ILoggerFactory logger, UrlEncoder encoder, IServiceProvider services)
    : AuthenticationHandler<TokenAuthenticationOptions>(options, logger, encoder)
{
    public const string SchemeName = "Token";

    protected override async Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        var header = Request.Headers.Authorization.ToString();
        if (!header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)) return AuthenticateResult.NoResult();
        var token = header["Bearer ".Length..].Trim();
        if (token.Length == 0) return AuthenticateResult.NoResult();
        if (Options.OperatorToken is { Length: > 0 } operatorToken && SameSecret(token, operatorToken))
        {
            return Success(Principals.Create(Principals.Operator, SchemeName, CallIdentity.OperatorRole));
        }
        if (services.GetService<IAccountDirectory>() is not { } accounts)
        {
            return Fail(new RpcException(new Status(StatusCode.Unauthenticated, "The bearer token is not the operator token, and no Accounts directory is configured.")));
        }
        // Authentication runs before the rate limiter (which limits per principal), so each unknown
        // token would cost an Accounts lookup however many a caller sends: unknown tokens are
        // limited per client address here, before the lookup.
        var limiter = services.GetService<UnknownTokenLimiter>();
        var address = "ip:" + Context.Connection.RemoteIpAddress;
        if (limiter is not null && !limiter.MayLookUp(address))
        {
            return Fail(RpcException.WithDetails(StatusCode.ResourceExhausted,
                $"Too many unknown bearer tokens from '{address}'; retry after {limiter.Period.TotalSeconds:0.###} s.",
                Details.RetryInfo(limiter.Period), Details.QuotaFailure((address, "unknown bearer tokens"))));
        }
        try
        {
            var account = await accounts.ResolveAsync(token, DateTime.MaxValue, Context.RequestAborted).ConfigureAwait(false);
            return Success(Principals.Create(Principals.AccountPrefix + account.Id, SchemeName, Principals.AccountRole));
        }
        catch (RpcException ex)
        {
            if (ex.StatusCode == StatusCode.Unauthenticated) limiter?.Unknown(address);
            return Fail(ex);
        }
    }

    private AuthenticateResult Success(ClaimsPrincipal principal) => AuthenticateResult.Success(new AuthenticationTicket(principal, SchemeName));

    private AuthenticateResult Fail(RpcException failure)
    {
        Principals.SetFailure(Context, failure);
        return AuthenticateResult.Fail(failure.Status.Detail);
    }

    private static bool SameSecret(string a, string b) =>
        CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(a)), SHA256.HashData(Encoding.UTF8.GetBytes(b)));
}

/// <summary>
/// Unknown bearer tokens per client address, with the rate limit's bucket (Permits per Period,
/// Burst): once a caller's bucket is empty its tokens are refused (RESOURCE_EXHAUSTED, RetryInfo)
/// without an Accounts lookup, until it refills. Known tokens cost nothing here.
/// </summary>
public sealed class UnknownTokenLimiter(RateLimitOptions limits) : IDisposable
{
    private readonly PartitionedRateLimiter<string> _limiter = PartitionedRateLimiter.Create<string, string>(address =>
        RateLimitPartition.GetTokenBucketLimiter(address, _ => new TokenBucketRateLimiterOptions
        {
            TokenLimit = limits.Burst > 0 ? limits.Burst : limits.Permits,
            TokensPerPeriod = limits.Permits,
            ReplenishmentPeriod = limits.Period,
            QueueLimit = 0,
            AutoReplenishment = true,
        }));

    public TimeSpan Period => limits.Period;

    /// <summary>Whether the address has unknown tokens left in its bucket.</summary>
    public bool MayLookUp(string address) => _limiter.GetStatistics(address) is not { CurrentAvailablePermits: <= 0 };

    /// <summary>Counts an unknown token against the address.</summary>
    public void Unknown(string address)
    {
        using var lease = _limiter.AttemptAcquire(address);
    }

    public void Dispose() => _limiter.Dispose();
}

/// <summary>Adds the roles the policy file gives a principal ("role &lt;subject&gt; &lt;role&gt;") as role claims.</summary>
public sealed class PolicyRoles(PermissionPolicy policy) : IClaimsTransformation
{
    public Task<ClaimsPrincipal> TransformAsync(ClaimsPrincipal principal)
    {
        if (principal.Identity is not { IsAuthenticated: true, Name: { } name }) return Task.FromResult(principal);
        var roles = policy.RolesOf(name);
        if (roles.Count == 0) return Task.FromResult(principal);
        // A copy: the certificate handler caches its principals, which must not grow on every call.
        var copy = principal.Clone();
        copy.AddIdentity(new ClaimsIdentity(roles.Select(r => new Claim(ClaimTypes.Role, r))));
        return Task.FromResult(copy);
    }
}
