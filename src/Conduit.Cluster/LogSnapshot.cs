using System.Text;
using System.Text.Json;
using Conduit.Storage.Log;
using DotNext.IO;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;

namespace Conduit.Cluster;

/// <summary>
/// What a snapshot says besides the topic files: the Raft entry it covers and, per topic, the
/// offset the next replicated append gets after that entry. Every record of every entry up to
/// <see cref="Index"/> is in the topic files, fsynced, when the manifest is written.
/// </summary>
internal sealed record SnapshotManifest
{
    public const int CurrentVersion = 1;
    public const string FileName = "manifest.json";

    private static readonly JsonSerializerOptions s_json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = true };

    public int Version { get; init; } = CurrentVersion;

    /// <summary>The last Raft entry applied to the files this snapshot is made of.</summary>
    public long Index { get; init; }

    public long Term { get; init; }

    public IReadOnlyList<SnapshotTopic> Topics { get; init; } = [];

    public byte[] Encode() => JsonSerializer.SerializeToUtf8Bytes(this, s_json);

    public static SnapshotManifest Decode(ReadOnlySpan<byte> bytes)
    {
        var manifest = JsonSerializer.Deserialize<SnapshotManifest>(bytes, s_json) ?? throw new InvalidDataException("empty snapshot manifest");
        if (manifest.Version != CurrentVersion) throw new InvalidDataException($"snapshot manifest version {manifest.Version} is not known to this node (it knows {CurrentVersion}): upgrade it");
        return manifest;
    }

    /// <summary>This node's snapshot in <paramref name="directory"/>, if it took or installed one.</summary>
    public static SnapshotManifest? Load(string directory)
    {
        var path = Path.Combine(directory, FileName);
        return File.Exists(path) ? Decode(File.ReadAllBytes(path)) : null;
    }

    /// <summary>Writes it durably (a crash leaves the old manifest or this one).</summary>
    public void Save(string directory)
    {
        Directory.CreateDirectory(directory);
        FileLogStorage.WriteFileAtomically(Path.Combine(directory, FileName), Encode());
    }
}

/// <summary>One topic in a <see cref="SnapshotManifest"/>: the replicated next offset at the snapshot's entry, and (for people reading it) where this node's files started and its durability.</summary>
internal sealed record SnapshotTopic(string Name, long NextOffset, long FirstOffset, string Durability);

/// <summary>
/// The snapshot DotNext's WAL keeps and sends (InstallSnapshot): the manifest, then the topic
/// files as they are when it is sent. Those files hold at least every record up to the manifest's
/// entry (and maybe later ones: they are skipped when the entries after the snapshot are applied,
/// as a replay after a restart skips them). The stream:
/// <code>
/// "CNDTSNP1" | i32 manifest length | manifest (JSON)
/// { u8 1 | string topic folder | string file name | i64 length | bytes }*   (strings: BinaryWriter's, UTF-8)
/// u8 0
/// </code>
/// </summary>
internal sealed class LogSnapshot(SnapshotManifest manifest, LogStateMachine machine) : ISnapshot
{
    private static readonly byte[] s_magic = "CNDTSNP1"u8.ToArray();

    public SnapshotManifest Manifest => manifest;

    public long Index => manifest.Index;

    public long Term => manifest.Term;

    bool IDataTransferObject.IsReusable => true;

    long? IDataTransferObject.Length => null; // the files grow until they are captured, when sending starts

    public async ValueTask WriteToAsync<TWriter>(TWriter writer, CancellationToken token)
        where TWriter : IAsyncBinaryWriter
    {
        var files = await machine.CaptureFilesAsync(token).ConfigureAwait(false);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        long sent = 0;
        try
        {
            var header = new MemoryStream();
            header.Write(s_magic);
            var encoded = manifest.Encode();
            header.Write(BitConverter.GetBytes(encoded.Length));
            header.Write(encoded);
            await writer.Invoke(header.ToArray(), token).ConfigureAwait(false);
            foreach (var file in files)
            {
                await writer.Invoke(FileHeader(file.Folder, file.Name, file.Length), token).ConfigureAwait(false);
                file.Stream.Position = 0;
                await writer.CopyFromAsync(file.Stream, file.Length, token).ConfigureAwait(false);
                sent += file.Length;
            }
            await writer.Invoke(new byte[] { 0 }, token).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            machine.SnapshotSendFailed(Index, clock.Elapsed, sent, files.Sum(f => f.Length), ex);
            throw;
        }
        finally
        {
            foreach (var file in files) await file.Stream.DisposeAsync().ConfigureAwait(false);
        }
    }

    private static byte[] FileHeader(string folder, string name, long length)
    {
        using var buffer = new MemoryStream();
        using (var w = new BinaryWriter(buffer, Encoding.UTF8, leaveOpen: true))
        {
            w.Write((byte)1);
            w.Write(folder);
            w.Write(name);
            w.Write(length);
        }
        return buffer.ToArray();
    }

    /// <summary>
    /// Reads a snapshot stream into <paramref name="staging"/> (one folder per topic, each file
    /// fsynced) and returns its manifest. Names are checked: a topic folder must be a topic's,
    /// a file one of a topic's own kinds, so a stream cannot write anywhere else.
    /// </summary>
    public static SnapshotManifest Unpack(Stream input, string staging, CancellationToken token = default)
    {
        using var reader = new BinaryReader(input, Encoding.UTF8, leaveOpen: true);
        if (!reader.ReadBytes(s_magic.Length).AsSpan().SequenceEqual(s_magic)) throw new InvalidDataException("not a Conduit log snapshot");
        var length = reader.ReadInt32();
        if (length is < 0 or > 64 * 1024 * 1024) throw new InvalidDataException("snapshot manifest length out of range");
        var manifest = SnapshotManifest.Decode(reader.ReadBytes(length));
        var buffer = new byte[128 * 1024];
        while (reader.ReadByte() == 1)
        {
            token.ThrowIfCancellationRequested();
            var folder = reader.ReadString();
            var name = reader.ReadString();
            var size = reader.ReadInt64();
            var topic = folder == FileLogStorage.DefaultTopicFolder ? "" : folder;
            if ((topic.Length > 0 && TopicNames.Validate(topic) is not null) || !IsTopicFile(name) || size < 0)
            {
                throw new InvalidDataException($"snapshot names a file this node does not take: {folder}/{name}");
            }
            var directory = Path.Combine(staging, folder);
            Directory.CreateDirectory(directory);
            using (var output = new FileStream(Path.Combine(directory, name), FileMode.CreateNew, FileAccess.Write))
            {
                var left = size;
                while (left > 0)
                {
                    var read = input.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
                    if (read == 0) throw new EndOfStreamException("snapshot stream ended inside a file");
                    output.Write(buffer, 0, read);
                    left -= read;
                }
                output.Flush(flushToDisk: true);
            }
        }
        foreach (var directory in Directory.EnumerateDirectories(staging)) FileLogStorage.SyncDirectory(directory);
        return manifest;
    }

    /// <summary>The files of a topic folder a snapshot carries: settings, segments (store and index) and producer state; not the checkpoint (the receiver's recovery finds the end), nor files set aside by a recovery.</summary>
    public static bool IsTopicFile(string name) =>
        name == FileLogStorage.TopicFile
        || (name.Length > 0 && name.IndexOfAny(['/', '\\']) < 0 && !name.StartsWith('.')
            && Path.GetExtension(name) is ".store" or ".index" or ".producers"
            && long.TryParse(Path.GetFileNameWithoutExtension(name), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out _));
}

/// <summary>One file of a snapshot being sent, open since the capture (so retention removing it meanwhile changes nothing), sent up to its length then.</summary>
internal sealed record CapturedFile(string Folder, string Name, long Length, FileStream Stream);
