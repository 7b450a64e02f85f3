using System.Reflection;
using Grpc.AspNetCore.Web;

namespace Conduit.Hosting;

/// <summary>
/// Settings for browsers, bound from "Conduit:Web" (appsettings.json, CONDUIT__WEB__CORSORIGINS__0,
/// `conduit serve --cors-origins`). Where browsers connect is <see cref="ServeOptions.WebUrls"/>.
/// </summary>
public sealed class WebOptions
{
    public const string Section = "Conduit:Web";

    /// <summary>
    /// Origins (scheme://host[:port]) whose pages may call the services with gRPC-Web, or "*" for
    /// any. Empty (the default): no CORS headers, so only pages this server serves itself (same
    /// origin, like the demo page) can read the answers.
    /// </summary>
    public string[] CorsOrigins { get; set; } = [];
}

/// <summary>
/// Browsers: gRPC-Web (application/grpc-web and the base64 application/grpc-web-text) for every
/// unary and server-streaming method (Grpc.AspNetCore.Web; browsers cannot make client or
/// bidirectional streams), CORS as <see cref="WebOptions"/> says, the console at "/" and the demo page at "/demo".
/// </summary>
public static class WebHosting
{
    /// <summary>Headers a page's script must be able to read from another origin: the call's status and details.</summary>
    private static readonly string[] ExposedHeaders = ["grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-encoding", "grpc-accept-encoding"];

    public static void Add(IServiceCollection services, IConfiguration? configuration)
    {
        var options = configuration?.GetSection(WebOptions.Section).Get<WebOptions>() ?? new WebOptions();
        services.AddSingleton(options);
        if (options.CorsOrigins.Length == 0) return;
        services.AddCors(cors => cors.AddDefaultPolicy(policy =>
        {
            if (options.CorsOrigins.Contains("*")) policy.AllowAnyOrigin();
            else policy.WithOrigins(options.CorsOrigins);
            policy.WithMethods("POST").AllowAnyHeader().WithExposedHeaders(ExposedHeaders);
        }));
    }

    /// <summary>CORS (when origins are configured) and gRPC-Web, after routing and before the endpoints.</summary>
    public static void Use(WebApplication app)
    {
        if (app.Services.GetService<WebOptions>() is { CorsOrigins.Length: > 0 }) app.UseCors();
        app.UseGrpcWeb(new GrpcWebOptions { DefaultEnabled = true });
    }

    /// <summary>
    /// The console at "/" (console/, built into the executable by the project: docs/console.md) and
    /// the demo page at "/demo" (SayHello and a ConsumeStream follower in a few lines of script),
    /// both embedded in the executable.
    /// </summary>
    public static void MapPage(WebApplication app)
    {
        MapResource(app, "/", "conduit.console.index.html", "text/html; charset=utf-8");
        MapResource(app, "/console.js", "conduit.console.console.js", "text/javascript; charset=utf-8");
        MapResource(app, "/console.css", "conduit.console.console.css", "text/css; charset=utf-8");
        MapResource(app, "/demo", "conduit.web.index.html", "text/html; charset=utf-8");
        MapResource(app, "/demo.js", "conduit.web.demo.js", "text/javascript; charset=utf-8");
    }

    private static void MapResource(WebApplication app, string path, string name, string contentType)
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream(name)
            ?? throw new InvalidOperationException($"the page resource {name} is missing from the executable");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        var content = copy.ToArray();
        app.MapGet(path, (RequestDelegate)(http =>
        {
            http.Response.ContentType = contentType;
            http.Response.Headers.CacheControl = "no-cache";
            http.Response.Headers.XContentTypeOptions = "nosniff";
            http.Response.ContentLength = content.Length;
            return http.Response.Body.WriteAsync(content).AsTask();
        }));
    }
}
