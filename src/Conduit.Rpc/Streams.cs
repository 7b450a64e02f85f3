namespace Conduit.Rpc;

/// <summary>
/// A stream of incoming messages. Use it with <c>await foreach</c>, or call
/// <see cref="MoveNext"/> and read <see cref="Current"/>.
/// </summary>
public interface IAsyncStreamReader<out T> : IAsyncEnumerable<T>
{
    T Current { get; }

    /// <summary>Advances to the next message; false at the end of the stream.</summary>
    ValueTask<bool> MoveNext(CancellationToken cancellationToken = default);
}

/// <summary>Options for one outgoing message.</summary>
[Flags]
public enum WriteFlags
{
    None = 0,
    /// <summary>Send this message uncompressed even when the call compresses.</summary>
    NoCompress = 2,
}

/// <summary>A stream of outgoing messages.</summary>
public interface IAsyncStreamWriter<in T>
{
    /// <summary>Options applied to the following writes.</summary>
    WriteFlags WriteFlags { get; set; }

    /// <summary>Writes one message; at most one write may be pending at a time.</summary>
    Task WriteAsync(T message, CancellationToken cancellationToken = default);
}

/// <summary>The request stream of a client-streaming or duplex call.</summary>
public interface IClientStreamWriter<in T> : IAsyncStreamWriter<T>
{
    /// <summary>Half-closes the call: tells the server no more messages follow.</summary>
    Task CompleteAsync();
}

/// <summary>The response stream of a server-streaming or duplex handler.</summary>
public interface IServerStreamWriter<in T> : IAsyncStreamWriter<T>
{
}

internal static class AsyncStreamReaderEnumerator
{
    public static async IAsyncEnumerator<T> Enumerate<T>(IAsyncStreamReader<T> reader, CancellationToken cancellationToken)
    {
        while (await reader.MoveNext(cancellationToken).ConfigureAwait(false))
        {
            yield return reader.Current;
        }
    }
}
