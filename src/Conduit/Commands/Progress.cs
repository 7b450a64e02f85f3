using System.Diagnostics;

namespace Conduit.Commands;

/// <summary>
/// A progress line for long work (CSV import, dump, bench), redrawn in place on stderr at most
/// five times a second when stderr is a terminal; nothing at all in a pipe or a file, so scripts
/// and logs only see the real output. <see cref="Done"/> (or Dispose) erases it.
/// </summary>
internal sealed class Progress : IDisposable
{
    private readonly string _what;
    private readonly bool _enabled;
    private readonly Stopwatch _since = Stopwatch.StartNew();
    private long _lastDraw = -1000;
    private bool _drawn;

    public Progress(string what, bool? enabled = null)
    {
        _what = what;
        _enabled = enabled ?? !Console.IsErrorRedirected;
    }

    /// <summary>Whether this progress line is shown at all (stderr is a terminal).</summary>
    public bool Enabled => _enabled;

    public void Report(long done, string unit, string? extra = null) // unit: singular ("key")
    {
        if (!_enabled) return;
        var now = _since.ElapsedMilliseconds;
        if (now - _lastDraw < 200) return;
        _lastDraw = now;
        _drawn = true;
        Console.Error.Write($"\r\u001b[K{_what}: {Cli.Count(done, unit)}{extra} ({now / 1000.0:0.0}s)");
    }

    public void Done()
    {
        if (!_drawn) return;
        _drawn = false;
        Console.Error.Write("\r\u001b[K");
    }

    public void Dispose() => Done();
}
