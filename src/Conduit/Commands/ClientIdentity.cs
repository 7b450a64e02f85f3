using System.CommandLine;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Conduit.Hosting;
using Conduit.Security;
using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Conduit.Commands;

/// <summary>
/// Who a client command is, on every command: --token (a bearer token: an account's, or the
/// operator token), --ca-file (trust a private CA for https:// servers), --cert and --key (a
/// client certificate for mutual TLS).
/// </summary>
internal static class ClientIdentity
{
    public const string TokenEnvironment = "CONDUIT_TOKEN";

    public static readonly Option<string?> Token = new("--token")
    {
        Description = $"Bearer token sent with every call: an account's token or the operator token (default: ${TokenEnvironment})",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable(TokenEnvironment),
        Recursive = true,
    };

    public static readonly Option<string?> CaFile = new("--ca-file")
    {
        Description = "PEM CA certificate(s) to trust for https:// servers instead of the system's (e.g. certs/ca.pem from `conduit certs dev`)",
        Recursive = true,
    };

    public static readonly Option<string?> Cert = new("--cert")
    {
        Description = "PEM client certificate for mutual TLS (its key in --key, or in the same file)",
        Recursive = true,
    };

    public static readonly Option<string?> Key = new("--key")
    {
        Description = "PEM private key of --cert",
        Recursive = true,
    };

    public static void AddTo(Command root)
    {
        root.Options.Add(Token);
        root.Options.Add(CaFile);
        root.Options.Add(Cert);
        root.Options.Add(Key);
    }

    /// <summary>TLS settings for the channel, or null for the defaults (the system's CAs, no client certificate).</summary>
    public static SslClientAuthenticationOptions? Tls(ParseResult parse)
    {
        var caFile = parse.GetValue(CaFile);
        var certFile = parse.GetValue(Cert);
        if (caFile is null && certFile is null) return null;
        var tls = new SslClientAuthenticationOptions();
        if (certFile is not null)
        {
            // A --key that belongs to a command (log produce --key) is the record's key, not a file.
            var keyFile = parse.CommandResult.Command.Options.Any(o => o.Name == "--key" && !ReferenceEquals(o, Key)) ? null : parse.GetValue(Key);
            // The rest of the --cert file (intermediates) goes along in the handshake.
            tls.ClientCertificateContext = Load("--cert/--key", () => ClusterTls.Presented(certFile, keyFile ?? certFile));
        }
        if (caFile is not null)
        {
            var authorities = Load("--ca-file", () => TrustedCa.Load(caFile));
            tls.RemoteCertificateValidationCallback = TrustedCa.Callback(authorities);
        }
        return tls;
    }

    /// <summary>A file that cannot be read is one line ("error: --ca-file: ..."), not a stack trace.</summary>
    private static T Load<T>(string option, Func<T> load)
    {
        try
        {
            return load();
        }
        catch (Exception ex) when (ex is IOException or System.Security.Cryptography.CryptographicException)
        {
            throw new ArgumentException($"{option}: {ex.Message}", ex);
        }
    }

    /// <summary>Adds `authorization: Bearer` with --token to every call that has none of its own.</summary>
    public static CallInvoker Intercept(CallInvoker invoker, ParseResult parse) => Intercept(invoker, parse.GetValue(Token));

    public static CallInvoker Intercept(CallInvoker invoker, string? token) =>
        token is { Length: > 0 } ? invoker.Intercept(metadata =>
        {
            if (metadata.Get(Services.Accounts.BearerToken.Header) is null) metadata.Add(Services.Accounts.BearerToken.Entry(token));
            return metadata;
        }) : invoker;
}
