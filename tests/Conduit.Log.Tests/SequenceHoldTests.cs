using Conduit.Services.Log;
using Conduit.Storage.Log;

namespace Conduit.Log.Tests;

/// <summary>The server's hold for idempotent batches ahead of their predecessor, on its own: its bounds and its wake-up.</summary>
public class SequenceHoldTests
{
    private static PendingAppend Ahead() => throw new OutOfOrderSequenceException("t", 7, 0, expected: 0, got: 10);

    [Fact]
    public async Task At_most_16_calls_of_a_producer_and_256_in_all_are_held_the_rest_are_refused_at_once_and_places_come_back()
    {
        var hold = new SequenceHold(TimeSpan.FromMinutes(5));
        using var stop = new CancellationTokenSource();
        var held = Enumerable.Range(0, SequenceHold.MaxHeldPerProducer).Select(_ => hold.AppendAsync("t", 7, Ahead, DateTime.MaxValue, stop.Token).AsTask()).ToList();
        Assert.DoesNotContain(held, t => t.IsCompleted);
        await Assert.ThrowsAsync<OutOfOrderSequenceException>(() => hold.AppendAsync("t", 7, Ahead, DateTime.MaxValue, stop.Token).AsTask());

        held.AddRange(Enumerable.Range(0, SequenceHold.MaxHeld - SequenceHold.MaxHeldPerProducer).Select(i => hold.AppendAsync("t", 100 + i, Ahead, DateTime.MaxValue, stop.Token).AsTask()));
        Assert.DoesNotContain(held, t => t.IsCompleted);
        await Assert.ThrowsAsync<OutOfOrderSequenceException>(() => hold.AppendAsync("u", 1, Ahead, DateTime.MaxValue, CancellationToken.None).AsTask());

        // The caller's cancellation ends a held call, and its place is given back.
        stop.Cancel();
        foreach (var call in held) await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call);
        var predecessorAppended = false;
        var again = hold.AppendAsync("u", 1, () => predecessorAppended ? new PendingAppend(42, Task.CompletedTask) : Ahead(), DateTime.MaxValue, CancellationToken.None).AsTask();
        Assert.False(again.IsCompleted);
        predecessorAppended = true;
        // Another producer's append does not wake it (it would succeed now if it tried again); its
        // own producer's does. (A non-event: 200 ms in which a wrong wake-up would have completed it.)
        hold.Appended("u", 2);
        await Task.Delay(TimeSpan.FromMilliseconds(200));
        Assert.False(again.IsCompleted, "woken by another producer's append");
        hold.Appended("u", 1);
        Assert.Equal(42, (await again.WaitAsync(TimeSpan.FromSeconds(30))).Offset);
    }
}
