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

    /// <summary>
    /// Where browsers and gRPC-Web clients connect: HTTP/1.1 and HTTP/2, because Kestrel cannot
    /// tell HTTP/1.1 from prior-knowledge h2c on one plaintext port, so the h2c listeners of
    /// <see cref="Urls"/> cannot serve them. Serves gRPC-Web, the demo page and plain HTTP
    /// endpoints (and gRPC itself over https://). Empty here: no such listener; `conduit serve`
    /// fills in <see cref="DefaultWebUrls"/>. "none": no such listener.
    /// </summary>
    public string[] WebUrls { get; set; } = [];

    /// <summary>
    /// `conduit serve`'s web listener when none is configured: the first http:// URL of
    /// <see cref="Urls"/> with the next port (http://127.0.0.1:50052 by default; port 0 stays
    /// 0, a free port); none when every URL is https:// (those serve browsers themselves).
    /// </summary>
    public string[] DefaultWebUrls()
    {
        var h2c = (Urls.Length > 0 ? Urls : [DefaultUrl]).Select(u => new Uri(u)).FirstOrDefault(u => u.Scheme == Uri.UriSchemeHttp);
        if (h2c is null) return [];
        return [new UriBuilder(h2c) { Port = h2c.Port == 0 ? 0 : h2c.Port + 1 }.Uri.GetLeftPart(UriPartial.Authority)];
    }

    /// <summary>PEM certificate (chain) for https:// URLs.</summary>
    public string? TlsCert { get; set; }

    /// <summary>PEM private key of <see cref="TlsCert"/>.</summary>
    public string? TlsKey { get; set; }

    /// <summary>The data folder of the embedded storage.</summary>
    public string DataDir { get; set; } = "./data";

    /// <summary>How long a shutdown waits for in-flight calls before cancelling them.</summary>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(5);
}
