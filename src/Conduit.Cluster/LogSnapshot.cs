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
/// The snapshot DotNext's WAL keeps and sends (InstallSnapshot): small whatever the log's size, so
/// it fits one Raft request. It carries the manifest and an offer: the capture the leader pinned
/// for it (hard links to the topic files and their lengths at one instant, between two applies),
/// a random token, the leader's gRPC address and the list of files. The receiver fetches the files
/// itself (LogAdmin.ReadSnapshotFile with that token) in the background, and acknowledges an
/// InstallSnapshot only once they are staged and in place (docs/cluster.md, "Snapshots"). The stream:
/// <code>
/// "CNDTSNP2" | i32 manifest length | manifest (JSON) | i32 offer length | offer (JSON)
/// </code>
/// </summary>
internal sealed class LogSnapshot(SnapshotManifest manifest, LogStateMachine machine) : ISnapshot
{
    private static readonly byte[] s_magic = "CNDTSNP2"u8.ToArray();
    private const int MaxPart = 64 * 1024 * 1024;

    public SnapshotManifest Manifest => manifest;

    public long Index => manifest.Index;

    public long Term => manifest.Term;

    bool IDataTransferObject.IsReusable => true;

    long? IDataTransferObject.Length => null; // the offer is made (the capture taken) when it is first sent

    public async ValueTask WriteToAsync<TWriter>(TWriter writer, CancellationToken token)
        where TWriter : IAsyncBinaryWriter
    {
        SnapshotOffer offer;
        try
        {
            offer = await machine.OfferAsync(manifest, token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            machine.CaptureFailed(Index, ex);
            throw;
        }
        await writer.Invoke(Encode(manifest, offer), token).ConfigureAwait(false);
    }

    public static byte[] Encode(SnapshotManifest manifest, SnapshotOffer offer)
    {
        using var buffer = new MemoryStream();
        buffer.Write(s_magic);
        foreach (var part in new[] { manifest.Encode(), offer.Encode() })
        {
            buffer.Write(BitConverter.GetBytes(part.Length));
            buffer.Write(part);
        }
        return buffer.ToArray();
    }

    /// <summary>The manifest and offer of an InstallSnapshot's payload; every file name checked (<see cref="SnapshotOffer.Decode"/>).</summary>
    public static (SnapshotManifest Manifest, SnapshotOffer Offer) Decode(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length < s_magic.Length || !bytes[..s_magic.Length].SequenceEqual(s_magic)) throw new InvalidDataException("not a Conduit log snapshot of this version (CNDTSNP2): upgrade every node");
        var at = s_magic.Length;
        ReadOnlySpan<byte> Part(ReadOnlySpan<byte> all, ref int at)
        {
            if (all.Length - at < 4) throw new InvalidDataException("snapshot payload cut short");
            var length = BitConverter.ToInt32(all[at..]);
            at += 4;
            if (length < 0 || length > all.Length - at) throw new InvalidDataException("snapshot payload part length out of range");
            var part = all.Slice(at, length);
            at += length;
            return part;
        }
        var manifest = SnapshotManifest.Decode(Part(bytes, ref at));
        var offer = SnapshotOffer.Decode(Part(bytes, ref at));
        return (manifest, offer);
    }

    /// <summary>Reads an InstallSnapshot's payload (at most 64 MiB).</summary>
    public static async Task<(SnapshotManifest Manifest, SnapshotOffer Offer)> ReadAsync(IDataTransferObject entry, CancellationToken token)
    {
        using var buffer = new MemoryStream();
        await entry.WriteToAsync(IAsyncBinaryWriter.Create(buffer, new byte[64 * 1024]), token).ConfigureAwait(false);
        if (buffer.Length > MaxPart) throw new InvalidDataException("snapshot payload larger than 64 MiB");
        return Decode(buffer.GetBuffer().AsSpan(0, (int)buffer.Length));
    }

    /// <summary>The files of a topic folder a snapshot carries: settings, segments (store and index) and producer state; not the checkpoint (the receiver's recovery finds the end), nor files set aside by a recovery.</summary>
    public static bool IsTopicFile(string name) =>
        name == FileLogStorage.TopicFile
        || (name.Length > 0 && name.IndexOfAny(['/', '\\']) < 0 && !name.StartsWith('.')
            && Path.GetExtension(name) is ".store" or ".index" or ".producers"
            && SegmentBase(name) is not null);

    /// <summary>The number a segment or producer-state file is named by (its base offset), or null for any other name.</summary>
    public static long? SegmentBase(string fileName) =>
        long.TryParse(Path.GetFileNameWithoutExtension(fileName), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var b) ? b : null;

    /// <summary>Whether <paramref name="folder"/> is a topic's folder name (the default topic's, or a valid topic name).</summary>
    public static bool IsTopicFolder(string folder) =>
        folder == FileLogStorage.DefaultTopicFolder || (folder.Length > 0 && TopicNames.Validate(folder) is null);
}

/// <summary>
/// What a leader offers with a snapshot: capture <see cref="CaptureId"/> (32 hex digits), readable
/// with <see cref="Token"/> at <see cref="RpcAddress"/>, made of <see cref="Files"/>.
/// </summary>
internal sealed record SnapshotOffer(string CaptureId, byte[] Token, string RpcAddress, IReadOnlyList<SnapshotFile> Files)
{
    private static readonly JsonSerializerOptions s_json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    public long TotalBytes => Files.Sum(f => f.Length);

    public byte[] Encode() => JsonSerializer.SerializeToUtf8Bytes(this, s_json);

    /// <summary>Decodes and checks an offer: a capture id of hex digits, topic folders and topic file names only, lengths not negative (nothing can be written elsewhere).</summary>
    public static SnapshotOffer Decode(ReadOnlySpan<byte> bytes)
    {
        var offer = JsonSerializer.Deserialize<SnapshotOffer>(bytes, s_json) ?? throw new InvalidDataException("empty snapshot offer");
        if (offer.CaptureId is not { Length: 32 } || !offer.CaptureId.All(char.IsAsciiHexDigitLower)) throw new InvalidDataException("snapshot offer: the capture id is not 32 lowercase hex digits");
        if (offer.Token is not { Length: >= 16 }) throw new InvalidDataException("snapshot offer: the token is shorter than 128 bits");
        foreach (var file in offer.Files ?? throw new InvalidDataException("snapshot offer without files"))
        {
            if (file.Folder is null || file.Name is null || !LogSnapshot.IsTopicFolder(file.Folder) || !LogSnapshot.IsTopicFile(file.Name) || file.Length < 0 || file.Id is { Length: > 200 })
            {
                throw new InvalidDataException($"snapshot names a file this node does not take: {file.Folder}/{file.Name}");
            }
        }
        return offer;
    }
}

/// <summary>
/// One file of a capture: its topic folder, name, and length when captured; <paramref name="Id"/>
/// names the leader's file (its process, device, inode and birth time; null when the file system
/// does not tell the birth time): the same id and length mean the same bytes (files are only
/// appended to while the leader runs), so a follower keeps a file staged for an older capture
/// instead of fetching it again. Added after the first offers: an offer without it decodes with null.
/// </summary>
internal sealed record SnapshotFile(string Folder, string Name, long Length, string? Id = null);
