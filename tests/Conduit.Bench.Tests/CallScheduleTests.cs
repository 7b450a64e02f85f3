using Conduit.Commands.Bench;

namespace Conduit.Bench.Tests;

public class CallScheduleTests
{
    // A 1 MHz clock keeps the arithmetic readable: 1 tick = 1 microsecond.
    private const long Frequency = 1_000_000;

    [Fact]
    public void Calls_are_due_evenly_spaced_from_the_origin()
    {
        var schedule = new CallSchedule(origin: 5_000, rps: 1000, Frequency);
        Assert.Equal([5_000, 6_000, 7_000, 8_000, 105_000], new long[] { 0, 1, 2, 3, 100 }.Select(schedule.DueAt));
    }

    [Fact]
    public void A_fractional_interval_does_not_drift()
    {
        // 3 calls/s on a 10 Hz clock: 3.33 ticks apart. Adding a rounded interval per call would
        // put call 3000 at 9000 or 12000; the schedule puts it exactly 1000 s later.
        var schedule = new CallSchedule(origin: 0, rps: 3, frequency: 10);
        Assert.Equal([0, 3, 6, 10, 13, 16, 20], Enumerable.Range(0, 7).Select(n => schedule.DueAt(n)));
        Assert.Equal(10_000, schedule.DueAt(3_000));
    }

    [Fact]
    public void A_pacer_that_woke_late_releases_every_call_due_by_then_with_its_own_due_time()
    {
        var schedule = new CallSchedule(origin: 1_000, rps: 1000, Frequency);
        Assert.Equal(0, schedule.DueBy(999));
        Assert.Equal(1, schedule.DueBy(1_000));
        Assert.Equal(1, schedule.DueBy(1_999));
        // Woke 10.5 ms late: calls 0..10 are due, the last at 11,000 (not "now").
        Assert.Equal(11, schedule.DueBy(11_500));
        Assert.Equal(11_000, schedule.DueAt(10));
        Assert.True(schedule.DueAt(11) > 11_500);
    }

    [Fact]
    public void DueBy_agrees_with_DueAt_at_every_boundary()
    {
        var schedule = new CallSchedule(origin: 123, rps: 7_777, Frequency);
        for (long n = 0; n < 20_000; n++)
        {
            var due = schedule.DueAt(n);
            Assert.Equal(n + 1, schedule.DueBy(due));
            Assert.True(schedule.DueBy(due - 1) <= n);
        }
    }

    [Fact]
    public void A_call_started_late_counts_from_when_it_was_due()
    {
        // Due at t=10 ms, no loop free until t=13 ms (the server stalled), answered at t=13.05 ms:
        // the caller on the schedule waited 3.05 ms, not 0.05 ms.
        var origin = CallSchedule.LatencyOrigin(due: 10_000, started: 13_000);
        Assert.Equal(3_050, 13_050 - origin);
    }

    [Fact]
    public void The_schedule_does_not_move_when_calls_are_slow()
    {
        // What a closed loop does wrong: the next call waits for the previous answer, so a stall
        // hides the calls that should have been made meanwhile. On the schedule, call n is due at
        // the same time however long the calls before it took.
        var schedule = new CallSchedule(origin: 0, rps: 100, Frequency);
        var answeredAt = 0L;
        var latencies = new List<long>();
        for (long n = 0; n < 5; n++)
        {
            var due = schedule.DueAt(n);
            var started = Math.Max(due, answeredAt); // one loop: starts when due or when free
            var took = n == 0 ? 50_000 : 100;        // the first call stalls 50 ms
            answeredAt = started + took;
            latencies.Add(answeredAt - CallSchedule.LatencyOrigin(due, started));
        }
        // Calls 1..4 were due at 10, 20, 30, 40 ms and all waited for the stall to end at 50 ms.
        Assert.Equal([50_000, 40_100, 30_200, 20_300, 10_400], latencies);
    }

    [Fact]
    public void Without_a_schedule_latency_counts_from_the_start()
    {
        Assert.Equal(13_000, CallSchedule.LatencyOrigin(due: null, started: 13_000));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-5)]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    public void A_rate_must_be_positive(double rps)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new CallSchedule(0, rps, Frequency));
    }
}
