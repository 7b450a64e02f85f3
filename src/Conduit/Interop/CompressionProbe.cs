namespace Conduit.Interop;

/// <summary>
/// An HTTP handler for the interop client that watches response bodies go by and records the
/// compressed flag of every gRPC frame, so the server_compressed_* cases can check what the
/// spec asks (the server compressed exactly the messages it was asked to): grpc-dotnet tells an
/// application a call's grpc-encoding, never a message's flag. The flags of every call on the
/// channel land in one list, so run one call at a time between <see cref="Reset"/>s.
/// </summary>
public sealed class CompressionProbe(HttpMessageHandler inner) : DelegatingHandler(inner)
{
    private readonly List<bool> _flags = new();

    /// <summary>The compressed flags of the response frames seen since the last <see cref="Reset"/>.</summary>
    public IReadOnlyList<bool> Flags
    {
        get { lock (_flags) return _flags.ToArray(); }
    }

    public void Reset()
    {
        lock (_flags) _flags.Clear();
    }

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
        var content = response.Content;
        var stream = await content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        var probed = new StreamContent(new FrameObservingStream(stream, Record));
        foreach (var header in content.Headers) probed.Headers.TryAddWithoutValidation(header.Key, header.Value);
        response.Content = probed;
        return response;
    }

    private void Record(bool compressed)
    {
        lock (_flags) _flags.Add(compressed);
    }
}
