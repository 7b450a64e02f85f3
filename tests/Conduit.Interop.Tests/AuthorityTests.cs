namespace Conduit.Interop.Tests;

/// <summary>
/// grpcio's own balancing against real `conduit serve` processes: its round_robin over an
/// "ipv4:a,b" target sends the comma list as :authority, which Kestrel alone resets
/// (AuthorityRepair lets it in).
/// </summary>
public class AuthorityTests
{
    [Fact]
    public async Task Grpcio_round_robin_over_an_ipv4_list_and_a_dns_target_reaches_every_server()
    {
        await using var servers = await ServeProcesses.Launch(2);
        var list = "ipv4:" + string.Join(',', servers.Addresses);
        var python = await ChildProcess.Run(Paths.Python, Paths.PythonScript("balance_client.py"), list, "--count", "20");
        Assert.True(python.ExitCode == 0, python.Errors);
        Assert.Equal("ok 20\n", python.Output);
        // round_robin: both servers took calls (the first ones may all go to the one connected first).
        var (first, second) = (await servers.Calls(0), await servers.Calls(1));
        Assert.Equal(20, first + second);
        Assert.True(first >= 5 && second >= 5, $"{first} and {second} calls");

        var dns = await ChildProcess.Run(Paths.Python, Paths.PythonScript("balance_client.py"), $"dns:///localhost:{servers.Ports[0]}", "--count", "5");
        Assert.True(dns.ExitCode == 0, dns.Errors);
        Assert.Equal(first + 5, await servers.Calls(0));
    }
}
