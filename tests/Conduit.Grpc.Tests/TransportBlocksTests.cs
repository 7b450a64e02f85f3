using System.Buffers;
using Conduit.Grpc.Tests.Protos;
using Conduit.Hosting;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Grpc.Tests;

/// <summary>
/// The blocks Kestrel's connections buffer in (Conduit:Connections:TransportBlockBytes,
/// <see cref="TransportBlocks"/>): the pool's contract with Kestrel, and a server that really reads
/// into them.
/// </summary>
public class TransportBlocksTests
{
    [Fact]
    public void Every_rent_is_a_whole_block_reused_once_given_back_and_a_second_dispose_of_the_same_rent_is_ignored()
    {
        using var pool = new TransportBlocks(16384).Create();
        var first = pool.Rent();
        Assert.Equal(16384, first.Memory.Length);
        Assert.Equal(16384, pool.Rent(100).Memory.Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Rent(16385));

        first.Memory.Span[0] = 42;
        var array = first.Memory;
        first.Dispose();
        first.Dispose(); // twice: must not put the block in the pool twice
        Assert.Throws<ObjectDisposedException>(() => first.Memory);
        var again = pool.Rent();
        Assert.True(again.Memory.Span == array.Span, "a given-back block is reused");
        var other = pool.Rent();
        Assert.False(other.Memory.Span == array.Span, "a block given back twice went to two owners");
    }

    [Fact]
    public void At_most_16_MiB_of_free_blocks_are_kept_for_all_pools_together_the_rest_are_left_to_the_GC()
    {
        var blocks = new TransportBlocks(16384);
        Assert.Equal(1024, blocks.MaxFreeBlocks);
        using MemoryPool<byte> one = blocks.Create(), two = blocks.Create();
        var leases = Enumerable.Range(0, 700).SelectMany(_ => new[] { one.Rent(), two.Rent() }).ToList();
        foreach (var lease in leases) lease.Dispose();
        Assert.Equal(blocks.MaxFreeBlocks, blocks.FreeBlocks);
        var again = two.Rent(); // from the shared free list
        Assert.Equal(blocks.MaxFreeBlocks - 1, blocks.FreeBlocks);
        again.Dispose();
    }

    [Theory]
    [InlineData(4095)]
    [InlineData(2 * 1024 * 1024)]
    public void A_block_size_out_of_range_is_refused(int bytes) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new TransportBlocks(bytes));

    /// <summary>Answers with the block size of the connection's memory pool; echoes streams.</summary>
    public sealed class PoolProbe : Probe.ProbeBase
    {
        public override Task<Msg> Unary(Msg request, ServerCallContext context) =>
            Task.FromResult(new Msg { Count = context.GetHttpContext().Features.Get<IMemoryPoolFeature>()?.MemoryPool.MaxBufferSize ?? -1 });

        public override async Task Duplex(IAsyncStreamReader<Msg> requestStream, IServerStreamWriter<Msg> responseStream, ServerCallContext context)
        {
            await foreach (var request in requestStream.ReadAllAsync(context.CancellationToken)) await responseStream.WriteAsync(request);
        }
    }

    [Theory]
    [InlineData(null, 16384)]       // the default
    [InlineData("65536", 65536)]
    [InlineData("0", 4096)]         // Kestrel's own pool
    public async Task Connections_read_into_blocks_of_the_size_set_and_carry_large_messages_intact(string? setting, int expected)
    {
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(setting is null ? [] : [new KeyValuePair<string, string?>($"{ConnectionOptions.Section}:TransportBlockBytes", setting)])
            .Build();
        await using var host = await TestHost.StartAsync(s => s.AddSingleton<PoolProbe>(), a => a.MapGrpcService<PoolProbe>(), configuration: configuration);
        var client = new Probe.ProbeClient(host.Channel);
        Assert.Equal(expected, (await client.UnaryAsync(new Msg())).Count);

        // Messages of 3 MiB and of a few bytes, both ways, through the blocks (and AuthorityRepair's pipe).
        var big = new string('x', 3 * 1024 * 1024 - 64) + "end";
        using var call = client.Duplex();
        foreach (var text in new[] { big, "small", big })
        {
            await call.RequestStream.WriteAsync(new Msg { Text = text });
            Assert.True(await call.ResponseStream.MoveNext());
            Assert.Equal(text, call.ResponseStream.Current.Text);
        }
        await call.RequestStream.CompleteAsync();
        Assert.False(await call.ResponseStream.MoveNext());
    }
}
