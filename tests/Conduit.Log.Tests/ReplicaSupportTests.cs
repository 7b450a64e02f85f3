using System.Text;
using Conduit.Storage.Log;

namespace Conduit.Log.Tests;

/// <summary>What a cluster node's snapshots ask of the file engine (docs/cluster.md, "Snapshots"): flush every topic or say which cannot be trusted, and swap a topic's folder for a received one.</summary>
public class ReplicaSupportTests
{
    private static LogRecord Value(string text) => new() { Value = Encoding.UTF8.GetBytes(text) };

    /// <summary>Topic "t" with records new0..new2, written by another storage under <paramref name="dir"/>: its folder.</summary>
    private static async Task<string> SentTopic(string dir)
    {
        var source = Path.Combine(dir, "source");
        using (var other = new FileLogStorage(source))
        {
            for (var i = 0; i < 3; i++) await other.GetOrCreate("t").AppendAsync(Value("new" + i));
        }
        return Path.Combine(source, "t");
    }

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
    [Fact]
    public async Task A_crash_between_the_two_renames_of_ReplaceTopic_leaves_the_old_topic()
    {
        using var dir = new TempDir();
        using (var storage = new FileLogStorage(dir.Path))
        {
            for (var i = 0; i < 2; i++) await storage.GetOrCreate("t").AppendAsync(Value("old" + i));
            await storage.GetOrCreate("").AppendAsync(Value("default"));
        }
        // The process died after ReplaceTopic renamed the topic's folder aside and before it moved
        // the received one in: no folder has the topic's name (the received one is still in .install).
        Directory.Move(Path.Combine(dir.Path, "t"), Path.Combine(dir.Path, ".replaced-t"));
        Directory.Move(Path.Combine(dir.Path, "_default"), Path.Combine(dir.Path, ".replaced-_default"));
        Directory.CreateDirectory(Path.Combine(dir.Path, ".install", "t"));

        using var reopened = new FileLogStorage(dir.Path);
        var topic = reopened.Find("t");
        Assert.NotNull(topic);
        Assert.Equal(2, topic.NextOffset);
        Assert.Equal("old1", Encoding.UTF8.GetString(topic.Read(1).Value.Span));
        Assert.Equal("default", Encoding.UTF8.GetString(reopened.Find("")!.Read(0).Value.Span));
        Assert.Empty(Directory.GetDirectories(dir.Path, ".replaced-*"));
    }

    [Fact]
    public async Task A_crash_after_both_renames_of_ReplaceTopic_keeps_the_new_topic_and_removes_the_old()
    {
        using var dir = new TempDir();
        var sent = await SentTopic(dir.Path);
        var root = Path.Combine(dir.Path, "node");
        using (var storage = new FileLogStorage(root)) await storage.GetOrCreate("t").AppendAsync(Value("old"));
        // Died after both renames, before the folder set aside was deleted.
        Directory.Move(Path.Combine(root, "t"), Path.Combine(root, ".replaced-t"));
        Directory.Move(sent, Path.Combine(root, "t"));

        using var reopened = new FileLogStorage(root);
        var topic = reopened.Find("t")!;
        Assert.Equal(3, topic.NextOffset);
        Assert.Equal("new2", Encoding.UTF8.GetString(topic.Read(2).Value.Span));
        Assert.Empty(Directory.GetDirectories(root, ".replaced-*"));
    }

    [Fact]
    public async Task ReplaceTopic_never_hides_the_topic_and_tells_the_old_instances_readers_it_was_replaced()
    {
        using var dir = new TempDir();
        var sent = await SentTopic(dir.Path);
        var root = Path.Combine(dir.Path, "node");
        var files = new FaultyFileSystem();
        using var storage = new FileLogStorage(files, root);
        var old = storage.GetOrCreate("t");
        await old.AppendAsync(Value("old"));
        var waiting = old.WaitForAsync(1, CancellationToken.None);
        var received = Path.Combine(root, ".install", "t");
        Directory.CreateDirectory(Path.GetDirectoryName(received)!);
        Directory.Move(sent, received);
        // Every fsync during the swap (the old topic's checkpoint, the folders' renames) looks the topic up, as a reader would.
        var missing = 0;
        files.BeforeFsync = files.BeforeSyncDirectory = _ =>
        {
            if (storage.Find("t") is null) Interlocked.Increment(ref missing);
        };

        var topic = storage.ReplaceTopic("t", received);
        files.BeforeFsync = files.BeforeSyncDirectory = null;
        Assert.Equal(0, missing);
        Assert.Same(topic, storage.Find("t"));
        var replaced = await Assert.ThrowsAsync<TopicReplacedException>(() => waiting.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal("t", replaced.Topic);
        Assert.Equal("t", Assert.Throws<TopicReplacedException>(() => old.Read(0)).Topic);
        Assert.Equal("new0", Encoding.UTF8.GetString(topic.Read(0).Value.Span));
    }
}
