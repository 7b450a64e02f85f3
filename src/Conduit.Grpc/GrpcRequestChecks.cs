using System.Globalization;
using System.Text;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Conduit.Grpc;

/// <summary>A call as it looks before its first message is read: what an <see cref="IEarlyRejector"/> decides on.</summary>
public sealed class EarlyCall
{
    internal EarlyCall(HttpContext http, string method)
    {
        Http = http;
        Method = method;
    }

    /// <summary>"/package.Service/Method".</summary>
    public string Method { get; }

    /// <summary>The request's metadata (HTTP/2 headers; -bin values still base64).</summary>
    public IHeaderDictionary Headers => Http.Request.Headers;

    /// <summary>The client's address as grpc-dotnet gives it in ServerCallContext.Peer ("ipv4:127.0.0.1:50000").</summary>
    public string Peer => CallPrincipal.PeerOf(Http);

    /// <summary>The authenticated user's name, or else the client's IP address (see <see cref="CallPrincipal"/>).</summary>
    public string Principal => CallPrincipal.Of(Http);

    public HttpContext Http { get; }
}

/// <summary>
/// grpc-go's InTapHandle: decides on a call from its method, metadata and peer before a message is
/// read or a handler runs, so a server under load or abuse refuses work at the cost of a header
/// check. Register implementations in DI (<c>services.AddSingleton&lt;IEarlyRejector, MyRejector&gt;()</c>);
/// they run in registration order, after the protocol checks of <see cref="GrpcRequestChecks"/>.
/// </summary>
public interface IEarlyRejector
{
    /// <summary>The status to end the call with (trailers-only, the request unread), or null to let it run.</summary>
    ValueTask<Status?> CheckAsync(EarlyCall call, CancellationToken cancellationToken);
}

/// <summary>Limits on a request's metadata, as gRPC C-core and grpc-go count it (RFC 7540 header list size: name + value + 32 per entry).</summary>
public sealed class MetadataLimits
{
    /// <summary>Above this a call is logged (grpc's default soft limit, 8 KiB).</summary>
    public int SoftLimitBytes { get; set; } = 8 * 1024;

    /// <summary>Above this a call is refused RESOURCE_EXHAUSTED (grpc's default hard limit, 16 KiB).</summary>
    public int HardLimitBytes { get; set; } = 16 * 1024;
}

/// <summary>
/// One middleware in front of the gRPC endpoints for protocol rules grpc-dotnet and ASP.NET Core
/// routing do not hold, each answered with a gRPC status (trailers-only) before the request is read:
/// <list type="bullet">
/// <item>HTTP/1.x (say, on an https:// port that negotiated HTTP/1.1): HTTP 505 with a plain message,
/// not grpc-dotnet's 426 whose Upgrade header points at an upgrade no gRPC client makes.</item>
/// <item>Method paths are case-sensitive (routing matches them case-insensitively): a path that
/// differs from the method's in case is UNIMPLEMENTED, as grpc-go answers.</item>
/// <item>Metadata over <see cref="MetadataLimits.HardLimitBytes"/> is RESOURCE_EXHAUSTED and logged
/// (Kestrel's own limits are set above it, so its HTTP 431 does not come first).</item>
/// <item>More than one <c>authorization</c> header is UNAUTHENTICATED: which one would be meant is a guess.</item>
/// <item>A <c>grpc-timeout</c> that has already run out (<c>0S</c>, <c>1n</c>: under the 100 ns a
/// deadline can hold) is DEADLINE_EXCEEDED; grpc-dotnet takes such a timeout for "no deadline".</item>
/// <item>Then every registered <see cref="IEarlyRejector"/>.</item>
/// </list>
/// </summary>
public static partial class GrpcRequestChecks
{
    /// <param name="app">The application, after routing and <see cref="GrpcCalls"/>, before the endpoints run.</param>
    /// <param name="limits">Metadata limits; default grpc's 8 KiB soft, 16 KiB hard.</param>
    public static IApplicationBuilder UseGrpcRequestChecks(this IApplicationBuilder app, MetadataLimits? limits = null)
    {
        ArgumentNullException.ThrowIfNull(app);
        limits ??= new MetadataLimits();
        var root = app.ApplicationServices;
        var logger = root.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(GrpcRequestChecks).FullName!);
        var rejectors = root.GetServices<IEarlyRejector>().ToArray();
        // Refused calls never reach LoggingInterceptor; they still count among the calls served.
        var counters = root.GetService<CallCounters>();
        var services = new Lazy<HashSet<string>>(() => GrpcCalls.ServiceNames(root).ToHashSet(StringComparer.Ordinal));
        Task Refuse(HttpContext http, StatusCode code, string message)
        {
            counters?.Record(code);
            return TrailersOnly(http, code, message);
        }
        return app.Use((http, next) =>
        {
            var grpc = http.GetEndpoint()?.Metadata.GetMetadata<GrpcMethodMetadata>();
            if (grpc is null) return next(http);
            var method = grpc.Method.FullName;
            var request = http.Request;
            if (HttpProtocol.IsHttp11(request.Protocol) || HttpProtocol.IsHttp10(request.Protocol))
            {
                if (IsGrpcWeb(request.ContentType)) return next(http);
                LogRefused(logger, method, PeerOf(http), "HTTP/1.x");
                counters?.Record(StatusCode.Internal);
                return Http1Refused(http);
            }
            if (!string.Equals(request.Path.Value, method, StringComparison.Ordinal))
            {
                var path = request.Path.Value ?? "";
                var slash = path.IndexOf('/', 1);
                var service = slash > 1 ? path[1..slash] : path.TrimStart('/');
                return Refuse(http, StatusCode.Unimplemented, services.Value.Contains(service) ? "Method is unimplemented." : "Service is unimplemented.");
            }
            var size = MetadataSize(request.Headers);
            if (size > limits.SoftLimitBytes)
            {
                if (size > limits.HardLimitBytes)
                {
                    LogMetadataTooLarge(logger, method, PeerOf(http), size, request.Headers.Count, limits.HardLimitBytes);
                    return Refuse(http, StatusCode.ResourceExhausted,
                        $"Request metadata of {size} bytes ({request.Headers.Count} entries) is over the server's limit of {limits.HardLimitBytes} bytes.");
                }
                LogMetadataLarge(logger, method, PeerOf(http), size, limits.SoftLimitBytes);
            }
            if (request.Headers.Authorization.Count > 1)
            {
                LogRefused(logger, method, PeerOf(http), "two authorization headers");
                return Refuse(http, StatusCode.Unauthenticated, "The call has more than one authorization header: send one.");
            }
            if (request.Headers.TryGetValue("grpc-timeout", out var timeout) && timeout.Count == 1 && TryParseTimeout(timeout[0], out var ticks) && ticks == 0)
            {
                return Refuse(http, StatusCode.DeadlineExceeded, "Deadline Exceeded");
            }
            return rejectors.Length == 0 ? next(http) : RunRejectorsAsync(http, next, rejectors, method, logger, counters);
        });
    }

    private static async Task RunRejectorsAsync(HttpContext http, RequestDelegate next, IEarlyRejector[] rejectors, string method, ILogger logger, CallCounters? counters)
    {
        var call = new EarlyCall(http, method);
        foreach (var rejector in rejectors)
        {
            if (await rejector.CheckAsync(call, http.RequestAborted).ConfigureAwait(false) is { } status)
            {
                LogEarlyRejected(logger, method, call.Peer, status.StatusCode, rejector.GetType().Name);
                counters?.Record(status.StatusCode);
                await TrailersOnly(http, status.StatusCode, status.Detail).ConfigureAwait(false);
                return;
            }
        }
        await next(http).ConfigureAwait(false);
    }

    private static bool IsGrpcWeb(string? contentType) =>
        contentType is not null && contentType.StartsWith("application/grpc-web", StringComparison.OrdinalIgnoreCase);

    /// <summary>The header list size of RFC 7540 (name + value + 32 per entry), as gRPC's metadata limits count it.</summary>
    public static long MetadataSize(IHeaderDictionary headers)
    {
        ArgumentNullException.ThrowIfNull(headers);
        long size = 0;
        foreach (var (name, values) in headers)
        {
            foreach (var value in values) size += name.Length + (value?.Length ?? 0) + 32;
        }
        return size;
    }

    /// <summary>A grpc-timeout value (1 to 8 digits and a unit, PROTOCOL-HTTP2.md) in whole 100 ns ticks, rounded down.</summary>
    public static bool TryParseTimeout(string? value, out long ticks)
    {
        ticks = 0;
        if (value is null || value.Length is < 2 or > 9) return false;
        if (!long.TryParse(value.AsSpan(0, value.Length - 1), NumberStyles.None, CultureInfo.InvariantCulture, out var amount)) return false;
        ticks = value[^1] switch
        {
            'H' => amount * TimeSpan.TicksPerHour,
            'M' => amount * TimeSpan.TicksPerMinute,
            'S' => amount * TimeSpan.TicksPerSecond,
            'm' => amount * TimeSpan.TicksPerMillisecond,
            'u' => amount * TimeSpan.TicksPerMicrosecond,
            'n' => amount / 100,
            _ => -1,
        };
        return ticks >= 0;
    }

    /// <summary>A trailers-only gRPC answer: HTTP 200 whose headers carry the status.</summary>
    public static Task TrailersOnly(HttpContext http, StatusCode code, string message)
    {
        ArgumentNullException.ThrowIfNull(http);
        http.Response.StatusCode = StatusCodes.Status200OK;
        http.Response.ContentType = "application/grpc";
        http.Response.Headers["grpc-status"] = ((int)code).ToString(CultureInfo.InvariantCulture);
        if (!string.IsNullOrEmpty(message)) http.Response.Headers["grpc-message"] = PercentEncode(message);
        return Task.CompletedTask;
    }

    private static Task Http1Refused(HttpContext http)
    {
        const string message = "gRPC needs HTTP/2 and this request came over HTTP/1.x. On an https:// port a gRPC client negotiates h2 (ALPN); a browser uses gRPC-Web (application/grpc-web).";
        http.Response.StatusCode = StatusCodes.Status505HttpVersionNotsupported;
        http.Response.Headers["grpc-status"] = ((int)StatusCode.Internal).ToString(CultureInfo.InvariantCulture);
        http.Response.Headers["grpc-message"] = PercentEncode(message);
        http.Response.ContentType = "text/plain; charset=utf-8";
        return http.Response.WriteAsync(message + "\n");
    }

    /// <summary>grpc-message encoding (PROTOCOL-HTTP2.md): UTF-8, with bytes outside printable ASCII and '%' as %XX.</summary>
    public static string PercentEncode(string message)
    {
        ArgumentNullException.ThrowIfNull(message);
        var plain = true;
        foreach (var c in message) plain &= c is >= ' ' and <= '~' and not '%';
        if (plain) return message;
        var builder = new StringBuilder(message.Length + 16);
        foreach (var b in Encoding.UTF8.GetBytes(message))
        {
            if (b is >= (byte)' ' and <= (byte)'~' and not (byte)'%') builder.Append((char)b);
            else builder.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
        }
        return builder.ToString();
    }

    internal static string PeerOf(HttpContext http) => CallPrincipal.PeerOf(http);

    [LoggerMessage(Level = LogLevel.Information, Message = "{Method} from {Peer} refused: {Reason}.")]
    private static partial void LogRefused(ILogger logger, string method, string peer, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "{Method} from {Peer} refused RESOURCE_EXHAUSTED: metadata of {Size} bytes in {Count} entries, over the limit of {Limit} bytes.")]
    private static partial void LogMetadataTooLarge(ILogger logger, string method, string peer, long size, int count, int limit);

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Method} from {Peer}: metadata of {Size} bytes, over the soft limit of {Limit} bytes.")]
    private static partial void LogMetadataLarge(ILogger logger, string method, string peer, long size, int limit);

    [LoggerMessage(Level = LogLevel.Information, Message = "{Method} from {Peer} refused {Code} by {Rejector} before its request was read.")]
    private static partial void LogEarlyRejected(ILogger logger, string method, string peer, StatusCode code, string rejector);
}

/// <summary>
/// Who a call is for limits kept per caller: the authenticated user's name
/// (<c>HttpContext.User.Identity.Name</c>), or else the client's IP address.
/// </summary>
public static class CallPrincipal
{
    public static string Of(HttpContext http)
    {
        ArgumentNullException.ThrowIfNull(http);
        return http.User?.Identity is { IsAuthenticated: true, Name: { Length: > 0 } name }
            ? name
            : http.Connection.RemoteIpAddress?.ToString() ?? "unknown";
    }

    /// <summary>The same from a call's context (grpc-dotnet's carries its HttpContext; another's falls back to its peer's host).</summary>
    public static string Of(ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        try
        {
            return Of(context.GetHttpContext());
        }
        catch (InvalidOperationException)
        {
            return PeerHost(context.Peer);
        }
    }

    /// <summary>"ipv4:1.2.3.4:5" or "ipv6:[::1]:5" → "1.2.3.4" or "::1".</summary>
    public static string PeerHost(string? peer)
    {
        if (string.IsNullOrEmpty(peer)) return "unknown";
        var colon = peer.IndexOf(':', StringComparison.Ordinal);
        var rest = colon >= 0 ? peer[(colon + 1)..] : peer;
        if (rest.StartsWith('['))
        {
            var close = rest.IndexOf(']', StringComparison.Ordinal);
            return close > 0 ? rest[1..close] : rest;
        }
        var port = rest.LastIndexOf(':');
        return port > 0 ? rest[..port] : rest;
    }

    /// <summary>The client's address in ServerCallContext.Peer's form.</summary>
    public static string PeerOf(HttpContext http)
    {
        ArgumentNullException.ThrowIfNull(http);
        var ip = http.Connection.RemoteIpAddress;
        if (ip is null) return "unknown";
        return ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6
            ? $"ipv6:[{ip}]:{http.Connection.RemotePort}"
            : $"ipv4:{ip}:{http.Connection.RemotePort}";
    }
}
