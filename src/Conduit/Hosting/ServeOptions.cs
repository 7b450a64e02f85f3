namespace Conduit.Hosting;

/// <summary>
/// Settings of <c>conduit serve</c>, bound from the "Conduit" section of appsettings.json, from
/// CONDUIT__* environment variables (CONDUIT__URLS__0=..., CONDUIT__DATADIR=...) and from the
/// command line, later sources winning. Every default works on a laptop.
/// </summary>
public sealed class ServeOptions
{
    public const string Section = "Conduit";

    public const string DefaultUrl = "http://127.0.0.1:50051";

    /// <summary>Where to listen: http:// URLs speak h2c, https:// URLs speak h2 over TLS (ALPN). Empty: <see cref="DefaultUrl"/>.</summary>
    public string[] Urls { get; set; } = [];

    /// <summary>PEM certificate (chain) for https:// URLs.</summary>
    public string? TlsCert { get; set; }

    /// <summary>PEM private key of <see cref="TlsCert"/>.</summary>
    public string? TlsKey { get; set; }

    /// <summary>The data folder of the embedded storage.</summary>
    public string DataDir { get; set; } = "./data";

    /// <summary>How long a shutdown waits for in-flight calls before cancelling them.</summary>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(5);
}
