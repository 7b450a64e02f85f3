using System.Diagnostics;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Conduit.Storage.Log;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;
using Record = Conduit.Protos.Log.V1.Record;

namespace Conduit.Log.Tests;

/// <summary>
/// Failures of the disk reach the client as statuses with details (LogExceptionMapper), through
/// the real storage engine: a full disk from the fault-injecting file layer (always), and a real
/// 2 MiB tmpfs (when this process may mount one).
/// </summary>
public class StorageFailureTests(ITestOutputHelper output)
{
    private static ProduceRequest Produce(string value, string topic = "") =>
        new() { Topic = topic, Record = new Record { Value = ByteString.CopyFromUtf8(value) } };

    private static CallOptions Timeout() => new CallOptions().WithTimeout(TimeSpan.FromSeconds(30));

    private static void AssertDiskFull(RpcException ex, string dataDir, string topic = "")
    {
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        var info = ex.GetDetail<ErrorInfo>()!;
        Assert.Equal(("DISK_FULL", "log.conduit.dev", topic), (info.Reason, info.Domain, info.Metadata["topic"]));
        Assert.Contains("disk is full", ex.GetDetail<LocalizedMessage>()!.Message);
        Assert.NotNull(ex.GetDetail<RetryInfo>());
        Assert.DoesNotContain(dataDir, ex.Status.Detail); // no server paths on the wire
    }

    [Fact]
    public async Task A_full_disk_answers_resource_exhausted_and_produce_works_again_once_space_is_freed()
    {
        var files = new FaultyFileSystem();
        await using var server = await LogServer.StartAsync((services, data) =>
            services.AddSingleton<ILogStorage>(_ => new FileLogStorage(files, Path.Combine(data, "log"))));
        Assert.Equal(0ul, (await server.Log.ProduceAsync(Produce("before"), Timeout())).Offset);
        Assert.Equal(0ul, (await server.Log.ProduceAsync(Produce("elsewhere", "other"), Timeout())).Offset);

        files.FreeBytes = 0;
        var first = await Assert.ThrowsAsync<RpcException>(() => server.Log.ProduceAsync(Produce("x"), Timeout()).ResponseAsync);
        AssertDiskFull(first, server.DataDir);
        using (var call = server.Log.ProduceStream(Timeout()))
        {
            await call.RequestStream.WriteAsync(Produce("z"));
            await call.RequestStream.CompleteAsync();
            var stream = await Assert.ThrowsAsync<RpcException>(async () => { await foreach (var _ in call.ResponseStream.ReadAllAsync()) { } });
            AssertDiskFull(stream, server.DataDir);
        }
        // Reads go on while the disk is full.
        Assert.Equal("before", (await server.Log.ConsumeAsync(new ConsumeRequest { Offset = 0 }, Timeout())).Record.Value.ToStringUtf8());

        files.FreeBytes = null; // space freed: no restart
        Assert.Equal(1ul, (await server.Log.ProduceAsync(Produce("after"), Timeout())).Offset);
        Assert.Equal(1ul, (await server.Log.ProduceAsync(Produce("fine", "other"), Timeout())).Offset);
        Assert.Equal("after", (await server.Log.ConsumeAsync(new ConsumeRequest { Offset = 1 }, Timeout())).Record.Value.ToStringUtf8());
    }

    [Fact]
    public async Task A_topic_that_cannot_be_opened_answers_unavailable_and_the_rest_of_the_log_is_served()
    {
        await using var server = await LogServer.StartAsync((_, data) =>
        {
            var folder = Directory.CreateDirectory(Path.Combine(data, "log", "orders")).FullName;
            File.WriteAllText(Path.Combine(folder, FileLogStorage.TopicFile), "{ damaged");
        });
        var ex = await Assert.ThrowsAsync<RpcException>(() => server.Log.ConsumeAsync(new ConsumeRequest { Topic = "orders" }, Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
        Assert.Equal("TOPIC_OFFLINE", ex.GetDetail<ErrorInfo>()!.Reason);
        Assert.DoesNotContain(server.DataDir, ex.Status.Detail);
        Assert.Equal(0ul, (await server.Log.ProduceAsync(Produce("default works"), Timeout())).Offset);
    }

    [Fact]
    public async Task A_real_full_tmpfs_answers_resource_exhausted_and_recovers_without_a_restart()
    {
        using var mountPoint = new TempDir("conduit-tmpfs-");
        if (!Run("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mountPoint.Path))
        {
            output.WriteLine("SKIPPED (real-disk variant): cannot mount a tmpfs here (needs root); the fault-layer test above covers the same path.");
            return;
        }
        try
        {
            var logDir = Path.Combine(mountPoint.Path, "log");
            var filler = Path.Combine(mountPoint.Path, "filler");
            var value = new string('t', 32 * 1024);
            await using (var server = await LogServer.StartAsync(null, ("Conduit:Log:Directory", logDir)))
            {
                Assert.Equal(0ul, (await server.Log.ProduceAsync(Produce("first"), Timeout())).Offset);
                // Fill the file system to about 100 KiB from full.
                FillUp(filler, mountPoint.Path, leave: 100 * 1024);
                RpcException? full = null;
                ulong next = 1;
                for (var i = 0; i < 20 && full is null; i++)
                {
                    try
                    {
                        Assert.Equal(next, (await server.Log.ProduceAsync(Produce(value), Timeout())).Offset);
                        next++;
                    }
                    catch (RpcException ex)
                    {
                        full = ex;
                    }
                }
                Assert.NotNull(full);
                AssertDiskFull(full, server.DataDir);
                output.WriteLine($"tmpfs full after {next} records");
                File.Delete(filler);
                Assert.Equal(next, (await server.Log.ProduceAsync(Produce("after"), Timeout())).Offset);
                Assert.Equal("after", (await server.Log.ConsumeAsync(new ConsumeRequest { Offset = next }, Timeout())).Record.Value.ToStringUtf8());
            }
            // A restart on a full disk still serves the log.
            FillUp(filler, mountPoint.Path, leave: 0);
            await using (var server = await LogServer.StartAsync(null, ("Conduit:Log:Directory", logDir)))
            {
                Assert.Equal("first", (await server.Log.ConsumeAsync(new ConsumeRequest { Offset = 0 }, Timeout())).Record.Value.ToStringUtf8());
            }
        }
        finally
        {
            Run("umount", mountPoint.Path);
        }
    }

    /// <summary>Writes a file until the file system has about <paramref name="leave"/> bytes free (or none).</summary>
    internal static void FillUp(string path, string mountPoint, long leave)
    {
        using var f = new FileStream(path, FileMode.Append);
        var chunk = new byte[4096];
        try
        {
            while (new DriveInfo(mountPoint).AvailableFreeSpace > leave)
            {
                f.Write(chunk);
                f.Flush();
            }
        }
        catch (IOException)
        {
            // Full.
        }
    }

    internal static bool Run(string file, params string[] args)
    {
        try
        {
            using var process = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardError = true, RedirectStandardOutput = true })!;
            process.WaitForExit(10_000);
            return process.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }
}
