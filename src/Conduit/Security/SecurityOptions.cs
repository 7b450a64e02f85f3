namespace Conduit.Security;

/// <summary>Whether an https:// listener asks TLS clients for a certificate.</summary>
public enum ClientCertificates
{
    /// <summary>Never asked; callers identify themselves with a bearer token, if at all.</summary>
    None,

    /// <summary>Asked for; a presented one must chain to <see cref="SecurityOptions.ClientCa"/>, a missing one is allowed.</summary>
    Optional,

    /// <summary>The TLS handshake fails without a certificate that chains to <see cref="SecurityOptions.ClientCa"/>.</summary>
    Required,
}

/// <summary>
/// Identity, permissions and limits of `conduit serve`, bound from "Conduit:Security"
/// (docs/operations.md, "Identity, permissions and limits").
/// </summary>
public sealed class SecurityOptions
{
    public const string Section = "Conduit:Security";

    /// <summary>The permission policy (docs/operations.md). Null: every caller may call everything, and only loopback listeners are allowed.</summary>
    public string? PolicyFile { get; set; }

    /// <summary>Without a policy, listen on non-loopback addresses anyway (everything open to anyone who can connect).</summary>
    public bool AllowOpen { get; set; }

    /// <summary>
    /// A static bearer token whose caller is the principal "operator" with role "operator" (the
    /// Accounts operator RPCs need that role). Null: no operator token. Set it through the
    /// environment (CONDUIT__SECURITY__OPERATORTOKEN) or appsettings.json, not a command line.
    /// </summary>
    public string? OperatorToken { get; set; }

    /// <summary>Whether https:// listeners ask for client certificates.</summary>
    public ClientCertificates ClientCertificates { get; set; } = ClientCertificates.None;

    /// <summary>PEM file of the CA(s) client certificates must chain to (the system store is never consulted).</summary>
    public string? ClientCa { get; set; }

    public RateLimitOptions RateLimit { get; set; } = new();

    /// <summary>Whether callers need to be identified at all (authentication runs only then).</summary>
    public bool NeedsAuthentication =>
        PolicyFile is not null || OperatorToken is { Length: > 0 } || ClientCertificates != ClientCertificates.None || RateLimit.Enabled;
}

/// <summary>A token bucket per principal (anonymous callers: per IP address); each call takes one token.</summary>
public sealed class RateLimitOptions
{
    /// <summary>Calls allowed per <see cref="Period"/> and principal; 0 (the default): no limit.</summary>
    public int Permits { get; set; }

    /// <summary>How often <see cref="Permits"/> tokens are added back.</summary>
    public TimeSpan Period { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>The bucket's size (calls that may come at once); 0: <see cref="Permits"/>.</summary>
    public int Burst { get; set; }

    public bool Enabled => Permits > 0;
}
