using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Text;
using System.Text.Json;
using DotNext.Buffers;
using DotNext.Net.Cluster.Consensus.Raft.Membership;

namespace Conduit.Cluster;

/// <summary>
/// The cluster's membership (the Raft addresses of its voters) as this node last committed it, in
/// one file of the Raft folder, so a restart keeps the members that `conduit cluster join|leave`
/// made and `--cluster-peers` only seeds the first start. DotNext saves every configuration entry
/// the node applies here (versioned by its log index), and the leader ships it to new members.
/// </summary>
internal sealed class MembersFile(string path) : PersistentClusterConfigurationStorage<EndPoint>(path)
{
    public const string FileName = "conduit-members";

    protected override void Encode(EndPoint address, ref BufferWriterSlim<byte> writer)
    {
        var text = Encoding.UTF8.GetBytes(address.ToString() ?? "");
        Span<byte> length = stackalloc byte[sizeof(ushort)];
        BinaryPrimitives.WriteUInt16LittleEndian(length, checked((ushort)text.Length));
        writer.Write(length);
        writer.Write(text);
    }

    protected override EndPoint Decode(ref SequenceReader reader)
    {
        Span<byte> length = stackalloc byte[sizeof(ushort)];
        reader.Read(length);
        var text = new byte[BinaryPrimitives.ReadUInt16LittleEndian(length)];
        reader.Read(text);
        return IPEndPoint.Parse(Encoding.UTF8.GetString(text));
    }
}

/// <summary>
/// Which node id and gRPC address belong to which Raft address: from the seed, from AddServer,
/// and from each member's metadata as this node reaches it; kept in a small JSON file next to
/// <see cref="MembersFile"/> so a restarted node names members it has not reached yet.
/// </summary>
internal sealed class MemberNames
{
    public const string FileName = "conduit-member-names.json";

    private readonly string _path;
    private readonly ConcurrentDictionary<EndPoint, (string Id, string? Rpc)> _byAddress = new();
    private readonly Lock _saving = new();

    public MemberNames(string path)
    {
        _path = path;
        if (!File.Exists(path)) return;
        try
        {
            foreach (var entry in JsonSerializer.Deserialize<Entry[]>(File.ReadAllBytes(path)) ?? [])
            {
                if (entry.Raft is not null && IPEndPoint.TryParse(entry.Raft, out var address) && entry.Id is { Length: > 0 }) _byAddress[address] = (entry.Id, entry.Rpc);
            }
        }
        catch (JsonException)
        {
            // Only names: learned again from the members' metadata.
        }
    }

    public string? IdOf(EndPoint address) => _byAddress.TryGetValue(address, out var known) ? known.Id : null;

    /// <summary>The gRPC address of the member at <paramref name="address"/> (the current member's, never a former holder's of its id).</summary>
    public string? RpcAt(EndPoint address) => _byAddress.TryGetValue(address, out var known) ? known.Rpc : null;

    public EndPoint? AddressOf(string id) => _byAddress.FirstOrDefault(p => p.Value.Id == id).Key;

    /// <summary>
    /// Records what is known of <paramref name="address"/> (an unknown rpc keeps the one known);
    /// an id is at one address only, so another address's entry with the same id (a member that
    /// left and joined again elsewhere, a mistyped join) is dropped. Saved when it changed.
    /// </summary>
    public void Learn(EndPoint address, string id, string? rpc)
    {
        var changed = false;
        lock (_saving)
        {
            _byAddress.AddOrUpdate(address, _ => { changed = true; return (id, rpc); }, (_, old) =>
            {
                var next = (id, rpc ?? (old.Id == id ? old.Rpc : null));
                changed = next != old;
                return next;
            });
            foreach (var stale in _byAddress.Where(p => p.Value.Id == id && !p.Key.Equals(address)).Select(p => p.Key).ToList())
            {
                changed |= _byAddress.TryRemove(stale, out _);
            }
            if (changed) Save();
        }
    }

    /// <summary>Drops what is known of <paramref name="address"/> (a member removed, a join that failed); saved when it changed.</summary>
    public void Forget(EndPoint address)
    {
        lock (_saving)
        {
            if (_byAddress.TryRemove(address, out _)) Save();
        }
    }

    /// <summary>Writes the file; called under <see cref="_saving"/>.</summary>
    private void Save()
    {
        var entries = _byAddress.Select(p => new Entry { Raft = p.Key.ToString(), Id = p.Value.Id, Rpc = p.Value.Rpc }).OrderBy(e => e.Id, StringComparer.Ordinal).ToArray();
        var temp = _path + ".tmp";
        File.WriteAllBytes(temp, JsonSerializer.SerializeToUtf8Bytes(entries));
        File.Move(temp, _path, overwrite: true);
    }

    private sealed class Entry
    {
        public string? Raft { get; set; }
        public string? Id { get; set; }
        public string? Rpc { get; set; }
    }
}
