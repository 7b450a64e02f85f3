using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Conduit.Interop;

/// <summary>
/// Maps <see cref="TestServiceImpl"/> with what it needs to check expect_compressed the way the
/// spec means it, per message: grpc-dotnet tells a service only the call's grpc-encoding, and a
/// client may send a message of a gzip call uncompressed (WriteFlags.NoCompress), so a
/// middleware records the compressed flag of each request frame as the body is read.
/// </summary>
public static class InteropServer
{
    private const string ServicePath = "/grpc.testing.TestService";

    public static void Map(WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        app.Use((context, next) =>
        {
            // Only a call with a grpc-encoding can carry compressed messages (grpc-dotnet refuses a
            // compressed flag on any other), so only such calls pay for the observer.
            var encoding = context.Request.Headers["grpc-encoding"];
            if (encoding.Count > 0 && encoding[0] != "identity" && context.Request.Path.StartsWithSegments(ServicePath, StringComparison.Ordinal))
            {
                var flags = new RequestFrameFlags();
                context.Features.Set(flags);
                context.Request.Body = new FrameObservingStream(context.Request.Body, flags.Add);
            }
            return next(context);
        });
        app.MapGrpcService<TestServiceImpl>();
    }
}

/// <summary>The compressed flags of a call's request frames, in arrival order.</summary>
public sealed class RequestFrameFlags
{
    private readonly List<bool> _flags = [];

    internal void Add(bool compressed)
    {
        lock (_flags) _flags.Add(compressed);
    }

    /// <summary>
    /// Whether the call's request message number <paramref name="index"/> (from 0) came
    /// compressed. Its frame header has been read before the message could be handed over.
    /// </summary>
    public bool IsCompressed(int index)
    {
        lock (_flags)
        {
            if (index >= _flags.Count) throw new InvalidOperationException($"request message {index} was delivered before its frame was seen");
            return _flags[index];
        }
    }
}
