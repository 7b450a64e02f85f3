using System.Security.Cryptography.X509Certificates;
using Conduit.Grpc;
using Conduit.Services.Accounts;
using Conduit.Services.Cache;
using Grpc.Core;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Conduit.Hosting;

/// <summary>
/// Accounts and Cache in `conduit serve`. Accounts keeps its accounts in a file under the data
/// folder (or PostgreSQL with Conduit:Accounts:ConnectionString). The cache calls Accounts through
/// the generated client: at Conduit:Cache:AccountsUrl when set (Accounts then runs elsewhere and
/// is not served here), otherwise at this server's own first address, found once it listens.
/// </summary>
public static class CacheHosting
{
    public static void AddAccountsAndCache(IServiceCollection services, IConfiguration configuration, ServeOptions serve)
    {
        var accounts = configuration.GetSection(AccountsOptions.Section).Get<AccountsOptions>() ?? new AccountsOptions();
        // One operator token for the whole server (Conduit:Security:OperatorToken); the Accounts key is its older name.
        accounts.AdminToken = SecurityHosting.Options(configuration).OperatorToken ?? accounts.AdminToken;
        var cache = configuration.GetSection(CacheOptions.Section).Get<CacheOptions>() ?? new CacheOptions();
        AddAccounts(services, accounts, serve);
        AddCache(services, cache, serve);
        // Each opened before the first call on its own: a store or backend that cannot be opened
        // keeps only its services down (UNAVAILABLE, NOT_SERVING), retried in the background.
        StorageGates.Add(services, new StorageGate("accounts-store", "the accounts store", [typeof(AccountsService), typeof(Services.Seeds.GrpcInProductionAccountsService)], (sp, _) =>
        {
            if (ServesAccounts(sp)) sp.GetRequiredService<AccountsService>();
            return Task.CompletedTask;
        }, serve.DataDir));
        StorageGates.Add(services, new StorageGate("cache-backend", "the cache's backend", [typeof(CacheService), typeof(Services.Seeds.GrpcInProductionCacheService)], (sp, _) =>
        {
            sp.GetRequiredService<CacheService>();
            return Task.CompletedTask;
        }, serve.DataDir));
    }

    public static void AddAccounts(IServiceCollection services, AccountsOptions options, ServeOptions serve)
    {
        services.AddSingleton(options);
        services.AddSingleton<IAccountStore>(_ => options.ConnectionString is { Length: > 0 } connectionString
            ? new PostgresAccountStore(connectionString)
            : new FileAccountStore(options.FilePath ?? Path.Combine(serve.DataDir, "accounts", "accounts.json")));
        services.AddSingleton(sp => new AccountsService(sp.GetRequiredService<IAccountStore>(), options));
        // A store that is down (PostgreSQL) answers UNAVAILABLE with RetryInfo.
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IExceptionMapper, AccountsExceptionMapper>());
    }

    public static void AddCache(IServiceCollection services, CacheOptions options, ServeOptions serve)
    {
        services.AddSingleton(options);
        services.AddSingleton(_ => options.CreateBackend());
        services.AddSingleton(new DumpLimiter(options.MaxConcurrentDumps, options.DumpIdleTimeout));
        services.AddSingleton(sp => new AccountsLookup(
            () => options.AccountsUrl is { Length: > 0 } url ? ConduitChannel.ForAddress(url) : OwnChannel(sp, serve), options));
        services.AddSingleton<IAccountDirectory>(sp => sp.GetRequiredService<AccountsLookup>());
        services.AddSingleton(sp => new CacheService(sp.GetRequiredService<ICacheBackend>(), sp.GetRequiredService<IAccountDirectory>(), options, sp.GetRequiredService<DumpLimiter>()));
        // A backend that is down (Redis) answers UNAVAILABLE with RetryInfo.
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IExceptionMapper, CacheExceptionMapper>());
    }

    /// <summary>Whether Accounts is served here: it is registered and the cache does not call another server's.</summary>
    public static bool ServesAccounts(WebApplication app) => ServesAccounts(app.Services);

    /// <summary>As above, without creating AccountsService (whose store may not open).</summary>
    private static bool ServesAccounts(IServiceProvider services) =>
        services.GetService<IServiceProviderIsService>()?.IsService(typeof(AccountsService)) == true
        && services.GetService<CacheOptions>()?.AccountsUrl is not { Length: > 0 };

    /// <summary>Maps Cache, and Accounts unless the cache is configured to call another server's.</summary>
    public static void Map(WebApplication app)
    {
        var cache = app.Services.GetService<CacheOptions>();
        // Not resolved here: a bad accounts file or backend keeps only its service down (a StorageGate, when AddAccountsAndCache registered them).
        if (ServesAccounts(app)) app.MapGrpcService<AccountsService>();
        if (cache is not null) app.MapGrpcService<CacheService>();
    }

    /// <summary>
    /// A channel to this same server, at the first address it really listens on (so port 0 works):
    /// an http:// one when there is one; a wildcard host becomes loopback. Over https:// the
    /// channel trusts exactly this server's own certificate.
    /// </summary>
    private static global::Grpc.Net.Client.GrpcChannel OwnChannel(IServiceProvider services, ServeOptions serve)
    {
        var addresses = services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.ToList() ?? [];
        var chosen = addresses.FirstOrDefault(a => a.StartsWith("http://", StringComparison.OrdinalIgnoreCase)) ?? addresses.FirstOrDefault()
            ?? throw new InvalidOperationException("the server is not listening yet");
        var uri = new UriBuilder(chosen);
        if (uri.Host is "0.0.0.0" or "*" or "+") uri.Host = "127.0.0.1";
        else if (uri.Host is "[::]" or "::") uri.Host = "[::1]";
        // Its lookups carry this process's secret: the rate limiter exempts them, not every loopback caller.
        if (uri.Scheme != Uri.UriSchemeHttps || serve.TlsCert is null || serve.TlsKey is null) return ConduitChannel.ForAddress(uri.Uri, OwnLookups.Configure);
        var own = ConduitHost.LoadCertificate(serve.TlsCert, serve.TlsKey);
        var thumbprint = own.GetCertHashString();
        var tls = new System.Net.Security.SslClientAuthenticationOptions
        {
            RemoteCertificateValidationCallback = (_, cert, _, _) => cert is X509Certificate2 c && c.GetCertHashString() == thumbprint,
        };
        // Where every TLS client must show a certificate, the server shows its own (`conduit certs
        // dev` makes it fit for client use); otherwise the channel needs none.
        if (services.GetService<Security.SecurityOptions>()?.ClientCertificates == Security.ClientCertificates.Required) tls.ClientCertificates = [own];
        else own.Dispose();
        return ConduitChannel.ForAddress(uri.Uri, OwnLookups.Configure, tls: tls);
    }
}
