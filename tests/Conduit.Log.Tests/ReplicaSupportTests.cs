using System.Text;
using Conduit.Storage.Log;

namespace Conduit.Log.Tests;

/// <summary>What a cluster node's snapshots ask of the file engine (docs/cluster.md, "Snapshots"): flush every topic or say which cannot be trusted, and swap a topic's folder for a received one.</summary>
public class ReplicaSupportTests
{
    private static LogRecord Value(string text) => new() { Value = Encoding.UTF8.GetBytes(text) };

    [Fact]
    public async Task Flush_refuses_to_vouch_for_a_topic_whose_fsync_failed()
    {
        using var dir = new TempDir();
        var files = new FaultyFileSystem();
        using var storage = new FileLogStorage(files, dir.Path, new TopicSettings { Durability = Durability.Never });
        await storage.GetOrCreate("fine").AppendAsync(Value("a"));
        storage.Flush(); // nothing failed: durable now
        await storage.GetOrCreate("t").AppendAsync(Value("b"));
        files.FailFsync = path => path.Contains($"{Path.DirectorySeparatorChar}t{Path.DirectorySeparatorChar}", StringComparison.Ordinal);
        var refused = Assert.Throws<LogFailedException>(storage.Flush);
        Assert.Equal("t", refused.Topic);
    }

    [Fact]
    public async Task ReplaceTopic_swaps_a_topics_files_for_a_received_folder_and_opens_them()
    {
        using var dir = new TempDir();
        var source = Path.Combine(dir.Path, "source");
        using (var other = new FileLogStorage(source))
        {
            other.Create("t", new TopicConfig { Durability = Durability.Never, SegmentBytes = 4096 });
            for (var i = 0; i < 3; i++) await other.GetOrCreate("t").AppendAsync(Value("new" + i));
        }
        var root = Path.Combine(dir.Path, "node");
        using var storage = new FileLogStorage(root);
        await storage.GetOrCreate("t").AppendAsync(Value("old"));
        var received = Path.Combine(root, ".install", "t");
        Directory.CreateDirectory(Path.GetDirectoryName(received)!);
        Directory.Move(Path.Combine(source, "t"), received);

        var topic = storage.ReplaceTopic("t", received);
        Assert.Same(topic, storage.Find("t"));
        Assert.Equal(3, topic.NextOffset);
        Assert.Equal("new2", Encoding.UTF8.GetString(topic.Read(2).Value.Span));
        Assert.Equal(Durability.Never, topic.Settings.Durability);
        Assert.Equal(4096, topic.Settings.SegmentBytes);
        Assert.False(Directory.Exists(received));
        Assert.Equal(["_default", "t"], Directory.GetDirectories(root).Select(Path.GetFileName).Where(n => n![0] != '.').Order());
        Assert.Empty(Directory.GetDirectories(root, ".replaced-*"));
    }
}
