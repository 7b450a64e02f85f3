using System.Globalization;
using Conduit.Grpc;
using Grpc.Core;

namespace Conduit.Services.Log;

/// <summary>Limits on ConsumeStream followers (LogOptions: MaxConsumeStreamsPerPrincipal, ConsumeStreamBufferBytes).</summary>
public sealed class ConsumeStreamLimits
{
    /// <summary>Followers one principal (user name, or else client IP) may have open at once.</summary>
    public int MaxStreamsPerPrincipal { get; init; } = 100;

    /// <summary>
    /// Bytes of large records (from <see cref="LargeRecordBytes"/>) all followers together may have
    /// on their way to clients at once. Each such record costs about three times its size while it
    /// is written (the record read, and grpc-dotnet's serialization buffer), so the default 32 MiB
    /// keeps followers of 4 MiB records to about 100 MB however many there are.
    /// </summary>
    public long BufferBytes { get; init; } = 32L * 1024 * 1024;

    /// <summary>Records smaller than this go out without taking from <see cref="BufferBytes"/>.</summary>
    public int LargeRecordBytes { get; init; } = 64 * 1024;
}

/// <summary>
/// Enforces <see cref="ConsumeStreamLimits"/>: counts followers per principal, and hands out the
/// shared byte budget for large records first come, first served.
/// </summary>
public sealed class ConsumeStreamGate(ConsumeStreamLimits limits)
{
    private readonly Dictionary<string, int> _streams = new(StringComparer.Ordinal);
    private readonly Queue<(long Bytes, TaskCompletionSource Ready)> _waiting = new();
    private readonly Lock _lock = new();
    private long _inUse;
    private long _highWater;

    public ConsumeStreamLimits Limits { get; } = limits;

    /// <summary>The most budget bytes ever in use at once (for tests and diagnostics).</summary>
    public long HighWaterBytes
    {
        get
        {
            lock (_lock) return _highWater;
        }
    }

    /// <summary>Admits one more follower for <paramref name="principal"/>, or throws RESOURCE_EXHAUSTED with QuotaFailure.</summary>
    public Admission Enter(string principal)
    {
        lock (_lock)
        {
            var open = _streams.GetValueOrDefault(principal);
            if (open >= Limits.MaxStreamsPerPrincipal)
            {
                throw RpcException.WithDetails(StatusCode.ResourceExhausted,
                    $"Too many ConsumeStream calls open for '{Shorten(principal)}': {open} of {Limits.MaxStreamsPerPrincipal}. Close one, or follow several topics from fewer streams.",
                    Details.QuotaFailure((Shorten(principal), $"at most {Limits.MaxStreamsPerPrincipal.ToString(CultureInfo.InvariantCulture)} open ConsumeStream calls")));
            }
            _streams[principal] = open + 1;
        }
        return new Admission(this, principal);
    }

    private void Exit(string principal)
    {
        lock (_lock)
        {
            var open = _streams.GetValueOrDefault(principal) - 1;
            if (open <= 0) _streams.Remove(principal);
            else _streams[principal] = open;
        }
    }

    /// <summary>How much of the budget a record of <paramref name="size"/> bytes takes: 0 for a small one; a record larger than the budget takes all of it.</summary>
    public long Cost(long size) => size < Limits.LargeRecordBytes ? 0 : Math.Min(size, Limits.BufferBytes);

    /// <summary>Takes <paramref name="bytes"/> (from <see cref="Cost"/>) at once if nobody waits and they fit.</summary>
    public bool TryAcquire(long bytes)
    {
        if (bytes == 0) return true;
        lock (_lock)
        {
            if (_waiting.Count > 0 || _inUse + bytes > Limits.BufferBytes) return false;
            Take(bytes);
            return true;
        }
    }

    /// <summary>Waits for <paramref name="bytes"/>, in turn.</summary>
    public async ValueTask AcquireAsync(long bytes, CancellationToken cancellationToken)
    {
        if (TryAcquire(bytes)) return;
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock)
        {
            if (_waiting.Count == 0 && _inUse + bytes <= Limits.BufferBytes)
            {
                Take(bytes);
                return;
            }
            _waiting.Enqueue((bytes, ready));
        }
        try
        {
            await ready.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Granted in the meantime: give it back; otherwise the release that reaches it skips it.
            if (!ready.TrySetCanceled()) Release(bytes);
            throw;
        }
    }

    public void Release(long bytes)
    {
        if (bytes == 0) return;
        lock (_lock)
        {
            _inUse -= bytes;
            while (_waiting.TryPeek(out var next) && _inUse + next.Bytes <= Limits.BufferBytes)
            {
                _waiting.Dequeue();
                // A waiter that gave up already is skipped.
                if (next.Ready.TrySetResult()) Take(next.Bytes);
            }
        }
    }

    private void Take(long bytes)
    {
        _inUse += bytes;
        if (_inUse > _highWater) _highWater = _inUse;
    }

    private static string Shorten(string text) => text.Length <= 128 ? text : text[..128] + "…";

    /// <summary>One admitted follower; dispose when its call ends.</summary>
    public readonly struct Admission(ConsumeStreamGate gate, string principal) : IDisposable
    {
        public void Dispose() => gate.Exit(principal);
    }
}
