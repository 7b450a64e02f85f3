using BenchmarkDotNet.Attributes;
using Conduit.Storage.Log;

namespace Conduit.Benchmarks;

/// <summary>
/// The commit log engine alone (no gRPC): appending a 100-byte record under the `never` policy
/// (what the process does per record; `always` adds the fsync, which the Log bench measures
/// against the disk) and reading one back by offset (index lookup, CRC check, decode).
/// </summary>
[MemoryDiagnoser]
public class LogStorageBenchmarks
{
    private string _directory = "";
    private FileLogStorage _storage = null!;
    private ITopicLog _log = null!;
    private LogRecord _record = null!;
    private long _readOffset;

    [GlobalSetup]
    public void Setup()
    {
        _directory = Directory.CreateTempSubdirectory("conduit-log-bench-").FullName;
        _storage = new FileLogStorage(_directory, new TopicSettings { Durability = Durability.Never, SegmentBytes = 256L * 1024 * 1024 });
        _log = _storage.GetOrCreate("bench");
        _record = new LogRecord { Value = new byte[100], TimestampMs = 1 };
        for (var i = 0; i < 10_000; i++) _log.Append(_record);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _storage.Dispose();
        Directory.Delete(_directory, recursive: true);
    }

    [Benchmark]
    public long Append100Bytes() => _log.Append(_record).Offset;

    [Benchmark]
    public int ReadByOffset()
    {
        _readOffset = (_readOffset + 7919) % 10_000;
        return _log.Read(_readOffset).Value.Length;
    }
}
