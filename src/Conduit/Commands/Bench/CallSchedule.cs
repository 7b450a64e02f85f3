namespace Conduit.Commands.Bench;

/// <summary>
/// The fixed schedule of an open-loop run (<c>conduit bench --rps N</c>): call number
/// <c>n</c> (counted over all loops, warm-up included) is due at <c>origin + n / rps</c> seconds,
/// whatever happened to the calls before it. Latency counts from when a call was due, not from
/// when a loop got round to starting it: a server that stalls for a second is charged for every
/// call that should have gone out during that second, not just the one that was in flight
/// (no coordinated omission). All times are <see cref="System.Diagnostics.Stopwatch"/> ticks.
/// </summary>
internal readonly record struct CallSchedule
{
    private readonly double _ticksPerCall;

    public CallSchedule(long origin, double rps, long frequency)
    {
        if (!(rps > 0) || double.IsInfinity(rps)) throw new ArgumentOutOfRangeException(nameof(rps), rps, "--rps must be a positive number.");
        Origin = origin;
        _ticksPerCall = frequency / rps;
    }

    public long Origin { get; }

    /// <summary>When call <paramref name="n"/> is due. Computed from n, not by adding an interval per call, so rounding never accumulates.</summary>
    public long DueAt(long n) => Origin + (long)Math.Floor(n * _ticksPerCall);

    /// <summary>How many calls are due by <paramref name="now"/> (calls 0 .. result - 1): a pacer that woke late releases all of them at once, each with its own due time.</summary>
    public long DueBy(long now)
    {
        if (now < Origin) return 0;
        var n = (long)Math.Floor((now - Origin) / _ticksPerCall) + 1;
        // Floating point: make the answer agree exactly with DueAt at the boundaries.
        while (n > 0 && DueAt(n - 1) > now) n--;
        while (DueAt(n) <= now) n++;
        return n;
    }

    /// <summary>
    /// Where a call's latency starts: its due time on the schedule when there is one (a call
    /// started late waited that long because of the calls before it; that wait is latency), the
    /// moment it started otherwise (closed loop: the next call goes when the previous answered).
    /// A call that started before it was due (it cannot, by construction, but a clock can) counts
    /// from its start.
    /// </summary>
    public static long LatencyOrigin(long? due, long started) => due is { } d ? Math.Min(d, started) : started;
}
