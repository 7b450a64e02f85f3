namespace Conduit.Cluster;

/// <summary>One caller at a time per key, any number of keys at once; a key's gate exists only while someone holds or waits for it.</summary>
internal sealed class KeyedGate<TKey> where TKey : notnull
{
    private readonly Dictionary<TKey, (SemaphoreSlim Gate, int Users)> _gates = [];

    /// <summary>Waits for <paramref name="key"/>'s turn; disposing the result lets the next caller of that key in.</summary>
    public async Task<IDisposable> EnterAsync(TKey key, CancellationToken token)
    {
        SemaphoreSlim gate;
        lock (_gates)
        {
            if (!_gates.TryGetValue(key, out var entry)) entry = (new SemaphoreSlim(1, 1), 0);
            _gates[key] = (entry.Gate, entry.Users + 1);
            gate = entry.Gate;
        }
        try
        {
            await gate.WaitAsync(token).ConfigureAwait(false);
        }
        catch
        {
            Leave(key, release: false);
            throw;
        }
        return new Turn(this, key);
    }

    /// <summary>How many keys are held or waited for now.</summary>
    public int Count
    {
        get
        {
            lock (_gates) return _gates.Count;
        }
    }

    private void Leave(TKey key, bool release)
    {
        lock (_gates)
        {
            var (gate, users) = _gates[key];
            if (release) gate.Release();
            if (users > 1)
            {
                _gates[key] = (gate, users - 1);
                return;
            }
            _gates.Remove(key);
            gate.Dispose();
        }
    }

    private sealed class Turn(KeyedGate<TKey> owner, TKey key) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0) owner.Leave(key, release: true);
        }
    }
}
