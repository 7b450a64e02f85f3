using Conduit.Protos.Log.V1;

namespace Conduit.Log.Tests;

/// <summary>proglog's GetServers on one node: the server itself, as leader, at the address it answers on.</summary>
public class GetServersTests
{
    [Fact]
    public async Task One_node_lists_itself_as_leader_on_both_services()
    {
        await using var server = await LogServer.StartAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var ct = cts.Token;

        var fromLog = await server.Log.GetServersAsync(new GetServersRequest(), cancellationToken: ct);
        var fromAdmin = await server.Admin.GetServersAsync(new GetServersRequest(), cancellationToken: ct);

        var only = Assert.Single(fromLog.Servers);
        Assert.True(only.IsLeader);
        Assert.Equal($"127.0.0.1:{server.Port}", only.RpcAddr);
        Assert.False(string.IsNullOrEmpty(only.Id));
        Assert.Equal(fromLog, fromAdmin);
    }
}
