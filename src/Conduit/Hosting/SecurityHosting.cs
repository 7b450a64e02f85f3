using System.Globalization;
using System.Net;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Threading.RateLimiting;
using Conduit.Grpc;
using Conduit.Security;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.Certificate;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.AspNetCore.Server.Kestrel.Https;

namespace Conduit.Hosting;

/// <summary>
/// Identity, permissions and limits ("Conduit:Security", docs/operations.md): client
/// certificates on https:// listeners, one principal per call from ASP.NET Core authentication
/// (bearer token: operator or account; client certificate), the policy file checked by
/// <see cref="PermissionInterceptor"/>, and rate limits per principal. Without a policy every
/// call is allowed, so only loopback listeners are (unless AllowOpen says otherwise).
/// </summary>
public static class SecurityHosting
{
    private const string Scheme = "Conduit";

    public static SecurityOptions Options(IConfiguration? configuration) =>
        configuration?.GetSection(SecurityOptions.Section).Get<SecurityOptions>() ?? new SecurityOptions();

    /// <exception cref="ArgumentException">A setting is missing or the listeners are not allowed (open, not loopback).</exception>
    public static void Add(IServiceCollection services, IConfiguration? configuration, ServeOptions serve, SecurityOptions security)
    {
        if (security.ClientCertificates != ClientCertificates.None && security.ClientCa is null)
        {
            throw new ArgumentException($"Client certificates are {security.ClientCertificates.ToString().ToLowerInvariant()}: give the CA they must chain to (--client-ca or {SecurityOptions.Section}:ClientCa).");
        }
        if (security.PolicyFile is null && !security.AllowOpen)
        {
            // Every listener ConduitHost binds: the gRPC URLs and the web listener's ("none": no listener).
            var open = serve.Urls.Concat(serve.WebUrls.Where(url => url != "none")).FirstOrDefault(url => !IsLoopback(url));
            if (open is not null)
            {
                throw new ArgumentException($"'{open}' is not a loopback address, and without a permission policy anyone who can connect may call everything. "
                    + $"Give a policy (--policy FILE or {SecurityOptions.Section}:PolicyFile; docs/operations.md, \"Identity, permissions and limits\"), "
                    + $"or --allow-open ({SecurityOptions.Section}:AllowOpen=true) to serve it open anyway.");
            }
        }
        services.AddSingleton(security);
        var policy = security.PolicyFile is { } file ? PermissionPolicy.Load(file) : null;
        if (policy is not null)
        {
            services.AddSingleton(policy);
            services.AddSingleton<PermissionInterceptor>();
            // After Conduit's own interceptors (AddGrpc), so a denied call is logged and counted like any other.
            services.Configure<GrpcServiceOptions>(o => o.Interceptors.Add<PermissionInterceptor>());
            services.AddSingleton<IClaimsTransformation, PolicyRoles>();
        }
        if (!security.NeedsAuthentication) return;

        // Authentication brings data protection, which Conduit never uses: kept in memory, so no key
        // ring is created on disk (and no warning about it at every start).
        services.AddDataProtection().UseEphemeralDataProtectionProvider();
        var authentication = services.AddAuthentication(Scheme)
            .AddPolicyScheme(Scheme, "bearer token, else client certificate", o => o.ForwardDefaultSelector = http =>
                http.Request.Headers.Authorization.Count == 0 && http.Connection.ClientCertificate is not null && security.ClientCa is not null
                    ? CertificateAuthenticationDefaults.AuthenticationScheme : TokenAuthenticationHandler.SchemeName)
            .AddScheme<TokenAuthenticationOptions, TokenAuthenticationHandler>(TokenAuthenticationHandler.SchemeName, o => o.OperatorToken = security.OperatorToken);
        if (security.ClientCa is { } caFile)
        {
            var authorities = TrustedCa.Load(caFile);
            authentication.AddCertificate(o =>
            {
                o.AllowedCertificateTypes = CertificateTypes.Chained;
                o.ChainTrustValidationMode = X509ChainTrustMode.CustomRootTrust;
                o.CustomTrustStore = authorities;
                o.RevocationMode = X509RevocationMode.NoCheck;
                o.Events = new CertificateAuthenticationEvents
                {
                    OnCertificateValidated = context =>
                    {
                        var name = context.ClientCertificate.GetNameInfo(X509NameType.SimpleName, forIssuer: false);
                        context.Principal = Principals.Create(Principals.CertificatePrefix + name, context.Scheme.Name);
                        context.Success();
                        return Task.CompletedTask;
                    },
                    OnAuthenticationFailed = context =>
                    {
                        Principals.SetFailure(context.HttpContext, new RpcException(new Status(StatusCode.Unauthenticated, $"The client certificate was rejected: {context.Exception.Message}")));
                        return Task.CompletedTask;
                    },
                };
            }).AddCertificateCache();
        }
        if (security.RateLimit.Enabled)
        {
            AddRateLimits(services, security.RateLimit);
            services.AddSingleton(new UnknownTokenLimiter(security.RateLimit));
        }
    }

    /// <summary>Client certificates on an https:// listener, checked against the configured CA during the handshake.</summary>
    public static void ConfigureHttps(HttpsConnectionAdapterOptions https, SecurityOptions security)
    {
        ArgumentNullException.ThrowIfNull(https);
        ArgumentNullException.ThrowIfNull(security);
        if (security.ClientCertificates == ClientCertificates.None || security.ClientCa is null) return;
        var authorities = TrustedCa.Load(security.ClientCa);
        https.ClientCertificateMode = security.ClientCertificates == ClientCertificates.Required
            ? ClientCertificateMode.RequireCertificate : ClientCertificateMode.AllowCertificate;
        https.ClientCertificateValidation = (certificate, chain, errors) => TrustedCa.Validate(certificate, authorities, errors, clientAuth: true, chain);
    }

    /// <summary>Authentication and rate limiting, in front of the gRPC endpoints (before GrpcCalls).</summary>
    public static void Use(WebApplication app)
    {
        var security = app.Services.GetService<SecurityOptions>() ?? new SecurityOptions();
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Conduit.Security");
        if (security.PolicyFile is null)
        {
            logger.LogWarning("No permission policy ({Section}:PolicyFile): every caller may call every method{Open}.", SecurityOptions.Section,
                security.AllowOpen ? ", on every address (AllowOpen)" : "; only loopback addresses may be bound");
        }
        if (!security.NeedsAuthentication) return;
        app.UseAuthentication();
        if (security.RateLimit.Enabled) app.UseRateLimiter();
    }

    private static void AddRateLimits(IServiceCollection services, RateLimitOptions limits)
    {
        var bucket = new TokenBucketRateLimiterOptions
        {
            TokenLimit = limits.Burst > 0 ? limits.Burst : limits.Permits,
            TokensPerPeriod = limits.Permits,
            ReplenishmentPeriod = limits.Period,
            QueueLimit = 0,
            AutoReplenishment = true,
        };
        services.AddRateLimiter(o =>
        {
            o.GlobalLimiter = PartitionedRateLimiter.Create<HttpContext, string>(http =>
                http.GetEndpoint()?.Metadata.GetMetadata<GrpcMethodMetadata>() is not { } grpc || IsOwnLookup(http, grpc) ? RateLimitPartition.GetNoLimiter("")
                : RateLimitPartition.GetTokenBucketLimiter(PartitionKey(http), _ => bucket));
            o.OnRejected = (rejected, _) =>
            {
                var retryAfter = rejected.Lease.TryGetMetadata(MetadataName.RetryAfter, out var after) && after > TimeSpan.Zero ? after : limits.Period;
                WriteExhausted(rejected.HttpContext, retryAfter);
                return ValueTask.CompletedTask;
            };
        });
    }

    /// <summary>
    /// The cache's token lookups over loopback (Accounts/GetByToken, remembered for a few seconds
    /// each): limited only by the callers whose calls need them, never as one anonymous address.
    /// Told apart from any other loopback caller (a local proxy forwarding remote clients, which
    /// would otherwise guess tokens unthrottled) by <see cref="OwnLookups.Header"/>, a secret only
    /// this process knows, sent by the cache's own channel.
    /// </summary>
    private static bool IsOwnLookup(HttpContext http, GrpcMethodMetadata grpc) =>
        grpc.Method.FullName == "/accounts.v1.Accounts/GetByToken" && http.Connection.RemoteIpAddress is { } ip && IPAddress.IsLoopback(ip)
        && OwnLookups.IsOwn(http.Request.Headers[OwnLookups.Header].ToString());

    /// <summary>The principal's name; a caller without identity is limited per IP address.</summary>
    private static string PartitionKey(HttpContext http) =>
        http.User.Identity is { IsAuthenticated: true, Name: { } name } ? name : "ip:" + http.Connection.RemoteIpAddress;

    /// <summary>A trailers-only RESOURCE_EXHAUSTED with RetryInfo and grpc-retry-pushback-ms (gRFC A6), instead of HTTP 429.</summary>
    private static void WriteExhausted(HttpContext http, TimeSpan retryAfter)
    {
        var who = PartitionKey(http);
        var message = $"Too many calls from '{PermissionPolicy.Shorten(who)}'; retry after {retryAfter.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture)} s.";
        var status = new Google.Rpc.Status { Code = (int)StatusCode.ResourceExhausted, Message = message };
        status.Details.Add(Google.Protobuf.WellKnownTypes.Any.Pack(Details.RetryInfo(retryAfter)));
        status.Details.Add(Google.Protobuf.WellKnownTypes.Any.Pack(Details.QuotaFailure((who, "rate limit"))));
        var response = http.Response;
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "application/grpc";
        response.Headers["grpc-status"] = ((int)StatusCode.ResourceExhausted).ToString(CultureInfo.InvariantCulture);
        response.Headers["grpc-message"] = PercentEncode(message);
        response.Headers["grpc-status-details-bin"] = Convert.ToBase64String(Google.Protobuf.MessageExtensions.ToByteArray(status));
        // A retry the caller's deadline would not live to see: -1, "do not retry" (gRFC A6), so the
        // client reports RESOURCE_EXHAUSTED now instead of waiting out its deadline (grpc-dotnet and
        // grpc-java retry after any pushback >= 0, even beyond the deadline).
        var outlivesDeadline = RequestTimeout(http) is { } timeout && retryAfter >= timeout;
        response.Headers["grpc-retry-pushback-ms"] = outlivesDeadline ? "-1" : ((long)Math.Ceiling(retryAfter.TotalMilliseconds)).ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>The call's grpc-timeout (PROTOCOL-HTTP2: 1-8 digits and a unit H, M, S, m, u, n), if it has a valid one.</summary>
    private static TimeSpan? RequestTimeout(HttpContext http)
    {
        var text = http.Request.Headers["grpc-timeout"].ToString();
        if (text.Length is < 2 or > 9 || !long.TryParse(text.AsSpan(0, text.Length - 1), NumberStyles.None, CultureInfo.InvariantCulture, out var n)) return null;
        return text[^1] switch
        {
            'H' => TimeSpan.FromHours(n),
            'M' => TimeSpan.FromMinutes(n),
            'S' => TimeSpan.FromSeconds(n),
            'm' => TimeSpan.FromMilliseconds(n),
            'u' => TimeSpan.FromMicroseconds(n),
            'n' => TimeSpan.FromTicks(n / 100),
            _ => null,
        };
    }

    /// <summary>grpc-message's encoding: bytes outside printable ASCII, and '%', as %XX of their UTF-8.</summary>
    private static string PercentEncode(string message)
    {
        var builder = new StringBuilder(message.Length);
        foreach (var b in Encoding.UTF8.GetBytes(message))
        {
            if (b is >= 0x20 and <= 0x7E and not (byte)'%') builder.Append((char)b);
            else builder.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
        }
        return builder.ToString();
    }

    /// <summary>Whether a listener URL binds only loopback addresses ("localhost" binds 127.0.0.1 and ::1).</summary>
    public static bool IsLoopback(string url)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri)) return false;
        var host = uri.Host.Trim('[', ']');
        return host == "localhost" || (IPAddress.TryParse(host, out var ip) && IPAddress.IsLoopback(ip));
    }
}

/// <summary>
/// The secret the cache's channel to this same server's Accounts sends with its token lookups
/// (random per process, never stored or logged), so the rate limiter exempts those and only those.
/// </summary>
public static class OwnLookups
{
    public const string Header = "conduit-own-lookup";

    private static readonly string Secret = Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));

    public static bool IsOwn(string value) =>
        value.Length == Secret.Length && System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(value), Encoding.ASCII.GetBytes(Secret));

    /// <summary>Adds the header to every request of a channel to this server (wrapping its handler).</summary>
    public static void Configure(global::Grpc.Net.Client.GrpcChannelOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.HttpHandler = new AddHeader(options.HttpHandler ?? new SocketsHttpHandler());
    }

    private sealed class AddHeader(HttpMessageHandler inner) : DelegatingHandler(inner)
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            request.Headers.TryAddWithoutValidation(Header, Secret);
            return base.SendAsync(request, cancellationToken);
        }
    }
}
