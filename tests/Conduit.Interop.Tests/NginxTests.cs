using System.Globalization;
using Conduit.Grpc;
using Conduit.Protos.HelloWorld;

namespace Conduit.Interop.Tests;

/// <summary>
/// Proxy balancing: Debian's nginx with grpc_pass over an upstream of three `conduit serve`
/// processes, configured as docs/client.md shows ("Balancing through a proxy").
/// </summary>
public class NginxTests
{
    /// <summary>docs/client.md's configuration, with the test's ports and folder.</summary>
    public static string Config(string dir, int listenPort, IEnumerable<int> upstreamPorts) => $$"""
        daemon off;
        worker_processes 1;
        pid {{dir}}/nginx.pid;
        error_log {{dir}}/error.log warn;
        events { worker_connections 256; }
        http {
            access_log off;
            client_body_temp_path {{dir}}/body;
            proxy_temp_path {{dir}}/proxy;
            fastcgi_temp_path {{dir}}/fastcgi;
            uwsgi_temp_path {{dir}}/uwsgi;
            scgi_temp_path {{dir}}/scgi;
            upstream conduit {
        {{string.Join('\n', upstreamPorts.Select(p => $"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;"))}}
                keepalive 16;
            }
            server {
                listen 127.0.0.1:{{listenPort}} http2;
                location / {
                    grpc_pass grpc://conduit;
                    grpc_next_upstream error timeout;
                    grpc_read_timeout 1h;
                    grpc_send_timeout 1h;
                }
            }
        }
        """;

    [Fact]
    public async Task Nginx_grpc_pass_spreads_calls_over_three_servers_and_skips_a_dead_one()
    {
        if (!File.Exists("/usr/sbin/nginx")) Assert.Fail("nginx is not installed: scripts/test.sh installs it (Debian package nginx)");
        await using var servers = await ServeProcesses.Launch(3);
        using var dir = new TempDir("conduit-nginx-");
        var port = Ports.Free();
        await File.WriteAllTextAsync(Path.Combine(dir.Path, "nginx.conf"), Config(dir.Path, port, servers.Ports));
        await using var nginx = ChildProcess.Start("/usr/sbin/nginx", "-p", dir.Path, "-c", Path.Combine(dir.Path, "nginx.conf"));
        // No client retries: what survives the dead server below is nginx's doing.
        using var channel = ConduitChannel.ForAddress($"http://127.0.0.1:{port}", o => o.ServiceConfig = null);
        var greeter = new Greeter.GreeterClient(ConduitChannel.CreateCallInvoker(channel));
        // nginx is up when a call gets through (wait-for-ready retries the refused connection).
        await greeter.SayHelloAsync(new HelloRequest { Name = "first" }, new global::Grpc.Core.CallOptions(deadline: DateTime.UtcNow.AddSeconds(20)).WithWaitForReady());
        var before = await Task.WhenAll(Enumerable.Range(0, 3).Select(servers.Calls));
        for (var i = 0; i < 30; i++) Assert.Equal("Hello " + i.ToString(CultureInfo.InvariantCulture), (await greeter.SayHelloAsync(new HelloRequest { Name = i.ToString(CultureInfo.InvariantCulture) }, deadline: DateTime.UtcNow.AddSeconds(20))).Message);
        var after = await Task.WhenAll(Enumerable.Range(0, 3).Select(servers.Calls));
        var took = after.Zip(before, (a, b) => a - b).ToArray();
        Assert.Equal(30, took.Sum());
        Assert.All(took, n => Assert.InRange(n, 8, 12)); // nginx's round robin: 10 each

        // A dead upstream: nginx passes the call to the next one (grpc_next_upstream error).
        await servers.Kill(1);
        for (var i = 0; i < 20; i++) await greeter.SayHelloAsync(new HelloRequest { Name = "after" }, deadline: DateTime.UtcNow.AddSeconds(20));
    }
}
