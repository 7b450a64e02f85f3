using System.Collections.Concurrent;
using System.Text.RegularExpressions;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Conduit.Storage.Log;
using Grpc.Core;
using Grpc.Net.Client;

namespace Conduit.Services.Log;

/// <summary>
/// GetServers' answer (both Log's and LogAdmin's) with the members' Raft progress when the request
/// asks (docs/cluster.md, "Progress per node"): this node's own figures from Raft, and each other
/// member's as it answers a GetServers(PROGRESS_SELF) this node sends it now, with the caller's
/// authorization and a deadline of <see cref="AskTimeout"/>. A member that does not answer is
/// shown with the last figures it gave (kept here), how old they are, and why it did not answer.
/// Lag is worked out here, against the leader's figures in the same answer. A member is asked at
/// the gRPC address it advertises (never one derived from the caller's request, never a wildcard
/// one); a channel is kept per member address and disposed once no member has that address.
/// </summary>
/// <param name="tls">With <paramref name="secure"/>: how members' https:// ports are trusted and this node presents itself (the cluster CA); null: the system's CAs.</param>
public sealed partial class ClusterProgress(ILogServers? servers, bool secure = false, System.Net.Security.SslClientAuthenticationOptions? tls = null) : IDisposable
{
    /// <summary>How long this node waits for a member's own figures.</summary>
    public static readonly TimeSpan AskTimeout = TimeSpan.FromSeconds(1);

    // Lazy: two first callers for one address make one channel, not one each (one left undisposed).
    private readonly ConcurrentDictionary<string, Lazy<GrpcChannel>> _channels = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, (Server Figures, DateTimeOffset At)> _lastKnown = new(StringComparer.Ordinal);

    public async Task<GetServersResponse> AnswerAsync(GetServersRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        var list = servers?.Servers();
        var response = list is null ? LogMapping.Servers(servers, context) : LogMapping.Servers(list, context);
        if (request.Progress == GetServersRequest.Types.Progress.None) return response;
        var local = servers?.LocalProgress();
        foreach (var server in response.Servers)
        {
            // A single node (no Raft) is its own leader with no Raft entries: every figure 0.
            if (local is null) Fill(server, new LogNodeProgress(0, 0, 0, 0), 0);
            else if (server.Id == local.Value.Id) Fill(server, local.Value.Progress, 0);
        }
        if (request.Progress == GetServersRequest.Types.Progress.All && local is not null)
        {
            // Each member's own advertised address (the answer's may name the caller's host instead).
            var advertised = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var member in list ?? []) advertised.TryAdd(member.Id, member.RpcAddress);
            var others = response.Servers.Where(s => s.Id != local.Value.Id).ToList();
            await Task.WhenAll(others.Select(s => AskAsync(s, advertised.GetValueOrDefault(s.Id, ""), context))).ConfigureAwait(false);
            Prune(advertised.Values);
        }
        Lag(response, DateTimeOffset.UtcNow);
        return response;
    }

    private static void Fill(Server server, LogNodeProgress progress, ulong ageMs)
    {
        server.Reachable = ageMs == 0;
        server.Term = (ulong)progress.Term;
        server.CommitIndex = (ulong)progress.CommitIndex;
        server.AppliedIndex = (ulong)progress.AppliedIndex;
        server.LastIndex = (ulong)progress.LastIndex;
        server.FiguresAgeMs = ageMs;
    }

    /// <summary>Asks <paramref name="server"/> for its own figures; on failure fills in the last it gave.</summary>
    private async Task AskAsync(Server server, string address, ServerCallContext context)
    {
        try
        {
            if (address.Length == 0) throw new RpcException(new Status(StatusCode.Unavailable, "its gRPC address is not known yet"));
            if (LogMapping.RpcAddressProblem(address) is { } problem) throw new RpcException(new Status(StatusCode.FailedPrecondition, $"its gRPC address '{address}' is {problem}; not asked"));
            var channel = Channel(address);
            var headers = new Metadata();
            if (context.RequestHeaders.Get("authorization") is { } authorization) headers.Add(authorization);
            var deadline = DateTime.UtcNow + AskTimeout;
            if (context.Deadline < deadline) deadline = context.Deadline;
            var options = new CallOptions(headers, deadline, context.CancellationToken);
            var ask = new GetServersRequest { Progress = GetServersRequest.Types.Progress.Self };
            // The same method the caller called, so the member checks the same permission.
            var answer = context.Method.Contains("LogAdmin", StringComparison.Ordinal)
                ? await new LogAdmin.LogAdminClient(channel).GetServersAsync(ask, options).ConfigureAwait(false)
                : await new Protos.Log.V1.Log.LogClient(channel).GetServersAsync(ask, options).ConfigureAwait(false);
            var own = answer.Servers.FirstOrDefault(s => s.Id == server.Id && s.Reachable)
                ?? throw new RpcException(new Status(StatusCode.FailedPrecondition, $"the server at {address} does not answer as {server.Id}"));
            var progress = new LogNodeProgress((long)own.Term, (long)own.CommitIndex, (long)own.AppliedIndex, (long)own.LastIndex);
            Fill(server, progress, 0);
            _lastKnown[server.Id] = (own, DateTimeOffset.UtcNow);
        }
        catch (Exception ex)
        {
            // Any failure is this member's alone: the others' figures are still answered.
            server.ProgressError = ex is RpcException rpc ? $"{StatusName(rpc.StatusCode)}: {rpc.Status.Detail}" : $"INTERNAL: {ex.Message}";
            if (_lastKnown.TryGetValue(server.Id, out var known))
            {
                var age = (ulong)Math.Max(1, (DateTimeOffset.UtcNow - known.At).TotalMilliseconds);
                Fill(server, new LogNodeProgress((long)known.Figures.Term, (long)known.Figures.CommitIndex, (long)known.Figures.AppliedIndex, (long)known.Figures.LastIndex), age);
            }
        }
    }

    /// <summary>The channel this node keeps to a member's gRPC address (http or https as this node serves), for other calls to members (snapshot files).</summary>
    public GrpcChannel ChannelTo(string address) => Channel(address);

    /// <summary>The channel to <paramref name="address"/>, made once; one that failed to be made is not kept.</summary>
    private GrpcChannel Channel(string address)
    {
        var channel = _channels.GetOrAdd(address, a => new Lazy<GrpcChannel>(() => ConduitChannel.ForAddress((secure ? "https://" : "http://") + a, tls: secure ? tls : null)));
        try
        {
            return channel.Value;
        }
        catch
        {
            _channels.TryRemove(KeyValuePair.Create(address, channel));
            throw;
        }
    }

    /// <summary>Disposes the channels to addresses no member has any more (a member removed or moved).</summary>
    private void Prune(IEnumerable<string> addresses)
    {
        var current = addresses.ToHashSet(StringComparer.Ordinal);
        foreach (var (address, channel) in _channels)
        {
            if (!current.Contains(address) && _channels.TryRemove(KeyValuePair.Create(address, channel)) && channel.IsValueCreated) channel.Value.Dispose();
        }
    }

    /// <summary>The addresses a channel is kept for (tests).</summary>
    internal IReadOnlyCollection<string> ChannelAddresses => _channels.Keys.ToList();

    /// <summary>Each member's lag behind the leader's commit index in this answer (docs/cluster.md).</summary>
    private void Lag(GetServersResponse response, DateTimeOffset now)
    {
        var leader = response.Servers.FirstOrDefault(s => s.IsLeader && s.HasFiguresAgeMs);
        if (leader is null) return;
        foreach (var server in response.Servers.Where(s => s.HasFiguresAgeMs))
        {
            var behind = leader.CommitIndex > server.AppliedIndex ? leader.CommitIndex - server.AppliedIndex : 0;
            server.LagEntries = behind;
            if (behind == 0) server.LagMs = 0;
            else if (servers?.AppliedAt((long)server.AppliedIndex + 1) is { } since) server.LagMs = (ulong)Math.Max(0, (now - since).TotalMilliseconds);
        }
    }

    /// <summary>PermissionDenied → PERMISSION_DENIED, as gRPC names its codes.</summary>
    private static string StatusName(StatusCode code) => UpperCamel().Replace(code.ToString(), "_$1").ToUpperInvariant();

    [GeneratedRegex("(?<=[a-z])([A-Z])")]
    private static partial Regex UpperCamel();

    public void Dispose()
    {
        foreach (var channel in _channels.Values.Where(c => c.IsValueCreated)) channel.Value.Dispose();
    }
}
