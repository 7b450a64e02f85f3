using Grpc.Core;

namespace Conduit.Services.Seeds;

/// <summary>
/// A request stream of one message type seen as another: how a seed adapter hands its caller's
/// stream to the versioned service that does the work.
/// </summary>
internal sealed class MappedReader<TFrom, TTo>(IAsyncStreamReader<TFrom> inner, Func<TFrom, TTo> map) : IAsyncStreamReader<TTo>
{
    public TTo Current { get; private set; } = default!;

    public async Task<bool> MoveNext(CancellationToken cancellationToken)
    {
        if (!await inner.MoveNext(cancellationToken).ConfigureAwait(false)) return false;
        Current = map(inner.Current);
        return true;
    }
}

/// <summary>
/// A response stream of one message type written as another: the versioned service writes, the
/// seed's caller receives its own type. <paramref name="map"/> may throw an RpcException to end
/// the call (a value the seed's type cannot carry).
/// </summary>
internal sealed class MappedWriter<TFrom, TTo>(IServerStreamWriter<TTo> inner, Func<TFrom, TTo> map) : IServerStreamWriter<TFrom>
{
    public WriteOptions? WriteOptions
    {
        get => inner.WriteOptions;
        set => inner.WriteOptions = value;
    }

    public Task WriteAsync(TFrom message) => inner.WriteAsync(map(message));

    public Task WriteAsync(TFrom message, CancellationToken cancellationToken) => inner.WriteAsync(map(message), cancellationToken);
}
