using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Conduit.Services.Log;
using Conduit.Storage.Log;
using Google.Rpc;
using Grpc.Core;

namespace Conduit.Cluster.Tests;

/// <summary>
/// Which gRPC address a member is named by and dialed at: an id that joins again elsewhere is
/// named by its new address only, GetServers' progress dials only a member's own advertised
/// address (never a wildcard, never one made from the caller's :authority), and AddServer refuses
/// an rpc_addr that is not HOST:PORT.
/// </summary>
public sealed class MemberAddressTests
{
    private static readonly GetServersRequest All = new() { Progress = GetServersRequest.Types.Progress.All };

    [Fact]
    public void An_id_learned_at_a_new_address_replaces_its_old_address_also_in_the_file()
    {
        using var dir = new TempDir();
        var path = Path.Combine(dir.Path, MemberNames.FileName);
        var names = new MemberNames(path);
        var n1 = IPEndPoint.Parse("127.0.0.1:4001");
        names.Learn(n1, "n1", "127.0.0.1:5001");
        // n3 left, and joined again at another Raft address (or a mistyped join was retried).
        for (var i = 0; i < 20; i++) names.Learn(IPEndPoint.Parse($"10.0.0.{i + 1}:4000"), "n3", $"old-{i}:5000");
        var now = IPEndPoint.Parse("10.0.0.250:4001");
        names.Learn(now, "n3", "new-host:5000");

        Assert.Equal(now, names.AddressOf("n3"));
        for (var i = 0; i < 20; i++) Assert.Null(names.IdOf(IPEndPoint.Parse($"10.0.0.{i + 1}:4000")));
        Assert.Equal("n1", names.IdOf(n1));
        var saved = JsonDocument.Parse(File.ReadAllBytes(path)).RootElement.EnumerateArray()
            .Select(e => (e.GetProperty("Id").GetString(), e.GetProperty("Raft").GetString(), e.GetProperty("Rpc").GetString())).ToList();
        Assert.Equal([("n1", "127.0.0.1:4001", "127.0.0.1:5001"), ("n3", "10.0.0.250:4001", "new-host:5000")], saved);
        var reloaded = new MemberNames(path);
        Assert.Equal(now, reloaded.AddressOf("n3"));
    }

    [Fact]
    public async Task Progress_never_dials_a_wildcard_address_nor_the_callers_host()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        try
        {
            var port = ((IPEndPoint)listener.LocalEndpoint).Port;
            var accepted = listener.AcceptTcpClientAsync();
            using var progress = new ClusterProgress(new Members([new LogServer("n1", "127.0.0.1:1", true, "leader"), new LogServer("n2", $"0.0.0.0:{port}", false, "follower")]));
            // The caller names this listener's host as :authority: a node that follows it dials there with the caller's token.
            var answer = await progress.AnswerAsync(All, new Call($"localhost:{port}"));
            var n2 = answer.Servers.Single(s => s.Id == "n2");
            Assert.False(n2.Reachable);
            Assert.Contains("wildcard", n2.ProgressError, StringComparison.Ordinal);
            Assert.True(answer.Servers.Single(s => s.Id == "n1").Reachable);
            // Nothing connects: the answer came without any dial, so a connection now would be one already made.
            await Task.Delay(200);
            Assert.False(accepted.IsCompleted, "the node connected to the caller-chosen host");
        }
        finally
        {
            listener.Stop();
        }
    }

    [Fact]
    public async Task Progress_with_a_member_address_that_is_not_host_port_answers_the_others()
    {
        using var progress = new ClusterProgress(new Members([new LogServer("n1", "127.0.0.1:1", true, "leader"), new LogServer("n2", "bad host:5000", false, "follower")]));
        for (var i = 0; i < 2; i++)
        {
            var answer = await progress.AnswerAsync(All, new Call("127.0.0.1:1"));
            Assert.True(answer.Servers.Single(s => s.Id == "n1").Reachable);
            var n2 = answer.Servers.Single(s => s.Id == "n2");
            Assert.False(n2.Reachable);
            Assert.NotEqual("", n2.ProgressError);
        }
    }

    [Fact]
    public void A_forgotten_address_is_gone_from_the_names_and_the_file()
    {
        using var dir = new TempDir();
        var path = Path.Combine(dir.Path, MemberNames.FileName);
        var names = new MemberNames(path);
        var n3 = IPEndPoint.Parse("127.0.0.1:4003");
        names.Learn(n3, "n3", "127.0.0.1:5003");
        Assert.Equal("127.0.0.1:5003", names.RpcAt(n3));
        names.Forget(n3);
        Assert.Null(names.IdOf(n3));
        Assert.Null(names.RpcAt(n3));
        Assert.Null(new MemberNames(path).IdOf(n3));
    }

    [Fact]
    public async Task Progress_keeps_channels_only_for_the_members_addresses()
    {
        // Nothing listens there: each ask fails fast, a channel is made for it.
        var members = new Members([new LogServer("n1", "127.0.0.1:1", true, "leader"), new LogServer("n2", "127.0.0.1:2", false, "follower")]);
        using var progress = new ClusterProgress(members);
        // Whatever :authority the callers send, the node keeps one channel: to n2's own address.
        for (var i = 0; i < 20; i++) await progress.AnswerAsync(All, new Call($"h{i}.invalid:443"));
        Assert.Equal(["127.0.0.1:2"], progress.ChannelAddresses);
        // n2 moved (left and joined again elsewhere): the channel to its old address is disposed.
        members.List = [new LogServer("n1", "127.0.0.1:1", true, "leader"), new LogServer("n2", "127.0.0.1:3", false, "follower")];
        await progress.AnswerAsync(All, new Call("127.0.0.1:1"));
        Assert.Equal(["127.0.0.1:3"], progress.ChannelAddresses);
        // A member whose address is not one is not dialed: no channel.
        members.List = [new LogServer("n1", "127.0.0.1:1", true, "leader"), new LogServer("n2", "0.0.0.0:3", false, "follower")];
        await progress.AnswerAsync(All, new Call("127.0.0.1:1"));
        Assert.Empty(progress.ChannelAddresses);
    }

    [Theory]
    [InlineData("0.0.0.0:5000")]
    [InlineData("[::]:5000")]
    [InlineData("*:5000")]
    [InlineData("bad host:5000")]
    [InlineData("host")]
    [InlineData("host:0")]
    [InlineData("host:70000")]
    [InlineData("host:50/path")]
    [InlineData("user@host:5000")]
    public async Task AddServer_refuses_an_rpc_addr_other_nodes_cannot_dial(string rpcAddress)
    {
        var membership = new Membership();
        var admin = new LogAdminService(null!, membership.Servers, membership);
        var refused = await Assert.ThrowsAsync<RpcException>(() => admin.AddServer(new AddServerRequest { Id = "n4", RaftAddr = "127.0.0.1:4004", RpcAddr = rpcAddress }, new Call("127.0.0.1:1")));
        Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);
        Assert.Equal("rpc_addr", Assert.Single(refused.GetDetail<BadRequest>()!.FieldViolations).Field);
        Assert.Equal(0, membership.Added);
    }

    [Theory]
    [InlineData("127.0.0.1:5004")]
    [InlineData("node4.example:5004")]
    [InlineData("[::1]:5004")]
    public async Task AddServer_takes_a_host_port_rpc_addr(string rpcAddress)
    {
        var membership = new Membership();
        var admin = new LogAdminService(null!, membership.Servers, membership);
        await admin.AddServer(new AddServerRequest { Id = "n4", RaftAddr = "127.0.0.1:4004", RpcAddr = rpcAddress }, new Call("127.0.0.1:1"));
        Assert.Equal(1, membership.Added);
    }

    internal sealed class Members(IReadOnlyList<LogServer> list) : ILogServers
    {
        public IReadOnlyList<LogServer> List { get; set; } = list;

        public IReadOnlyList<LogServer> Servers() => List;

        public (string Id, LogNodeProgress Progress)? LocalProgress() => (List[0].Id, new LogNodeProgress(1, 1, 1, 1));
    }

    private sealed class Membership : ILogMembership
    {
        public Members Servers { get; } = new([new LogServer("n1", "127.0.0.1:1", true, "leader")]);

        public int Added { get; private set; }

        public Task<IReadOnlyList<LogServer>> AddServerAsync(string id, string raftAddress, string rpcAddress, CancellationToken token)
        {
            Added++;
            return Task.FromResult(Servers.Servers());
        }

        public Task<IReadOnlyList<LogServer>> RemoveServerAsync(string id, CancellationToken token) => Task.FromResult(Servers.Servers());
    }

    /// <summary>A Log/GetServers call as the caller shapes it: its :authority and its token.</summary>
    internal sealed class Call(string host) : ServerCallContext
    {
        protected override string MethodCore => "/log.v1.Log/GetServers";
        protected override string HostCore => host;
        protected override string PeerCore => "ipv4:127.0.0.1:5";
        protected override DateTime DeadlineCore => DateTime.MaxValue;
        protected override Metadata RequestHeadersCore { get; } = new() { { "authorization", "Bearer the-callers-token" } };
        protected override CancellationToken CancellationTokenCore => CancellationToken.None;
        protected override Metadata ResponseTrailersCore { get; } = [];
        protected override global::Grpc.Core.Status StatusCore { get; set; }
        protected override WriteOptions? WriteOptionsCore { get; set; }
        protected override AuthContext AuthContextCore => new("", []);
        protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) => throw new NotSupportedException();
        protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => Task.CompletedTask;
    }
}
