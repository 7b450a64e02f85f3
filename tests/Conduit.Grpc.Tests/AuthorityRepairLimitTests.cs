using System.Net.Sockets;

namespace Conduit.Grpc.Tests;

/// <summary>
/// AuthorityRepair (the :authority fixer in front of Kestrel) must not hold on to a frame Kestrel
/// would refuse at once: a HEADERS frame declaring 16 MB is passed on, and Kestrel answers GOAWAY,
/// instead of the connection stalling while the repairer waits for bytes that never come.
/// </summary>
public class AuthorityRepairLimitTests
{
    [Fact]
    public async Task An_oversized_header_frame_reaches_Kestrel_and_is_refused_at_once()
    {
        await using var host = await TestHost.StartAsync();
        using var client = new TcpClient();
        await client.ConnectAsync("127.0.0.1", host.Port);
        var stream = client.GetStream();
        var preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray();
        byte[] settings = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];
        // HEADERS on stream 1, length 0xFFFFFF (far over the 16 KiB frame limit), no END_HEADERS.
        byte[] headers = [0xff, 0xff, 0xff, 0x1, 0x0, 0, 0, 0, 1];
        await stream.WriteAsync(preface);
        await stream.WriteAsync(settings);
        await stream.WriteAsync(headers);
        await stream.WriteAsync(new byte[200 * 1024]);

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var buffer = new List<byte>();
        var chunk = new byte[4096];
        while (!HasGoAway(buffer))
        {
            var n = await stream.ReadAsync(chunk, timeout.Token); // stalls until the timeout without the limit
            if (n == 0) break;
            buffer.AddRange(chunk.AsSpan(0, n).ToArray());
        }
        Assert.True(HasGoAway(buffer), "no GOAWAY from Kestrel");
    }

    private static bool HasGoAway(List<byte> bytes)
    {
        for (var at = 0; at + 9 <= bytes.Count;)
        {
            var length = (bytes[at] << 16) | (bytes[at + 1] << 8) | bytes[at + 2];
            if (bytes[at + 3] == 0x7) return true;
            at += 9 + length;
        }
        return false;
    }
}
