using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Microsoft.AspNetCore.Connections;

namespace Conduit.Grpc;

/// <summary>
/// Kestrel's connection buffers in blocks of a chosen size. Kestrel's own pool hands out 4 KiB
/// blocks, and its socket transport reads into whatever is left of one, so a 1 MiB request takes
/// 256 receive calls, each waking the connection's reader; with 16 KiB blocks a read takes a whole
/// HTTP/2 DATA frame, and the pipes in between (the HTTP/2 stream's request body, AuthorityRepair)
/// hold a message in 4x fewer pieces. Measured (docs/performance.md): about an eighth less CPU per
/// MB of 4 KiB records through the log's producer. The cost: memory (a pipe holding a few bytes,
/// an idle stream's response, holds a whole block). Blocks and their owner objects are reused, as
/// Kestrel's are, so a stale second Dispose by an owner that already gave its block back would
/// hand the block to two owners, with Kestrel's pool too. Reusing them first failed a ClientTests
/// test in 5 runs of 8 (a call ending UNKNOWN): a handler's read left running after its call had
/// ended, on a pooled HTTP/2 stream (grpc/grpc-dotnet#1442). <see cref="ReadScopeInterceptor"/>
/// now stops such a read before the call ends, and the test passed 12 runs of 12. On by default
/// (docs/operations.md).
/// <para>
/// Registered as the <see cref="IMemoryPoolFactory{T}"/> Kestrel's socket transport creates its
/// pools with (one per I/O queue and listener; <c>Conduit:Connections:TransportBlockBytes</c>; 0
/// keeps Kestrel's own pool, with its idle eviction and aspnetcore.memorypool metrics). Blocks
/// are pinned (sockets read into them without a pin per call) and reused through one free list
/// for all the factory's pools, which keeps at most <see cref="MaxFreeBytes"/>; the rest are left
/// to the GC.
/// </para>
/// </summary>
public sealed class TransportBlocks : IMemoryPoolFactory<byte>
{
    public const int MinBlockBytes = 4096;
    public const int MaxBlockBytes = 1024 * 1024;

    /// <summary>Free blocks kept for reuse, all pools together.</summary>
    public const long MaxFreeBytes = 16L * 1024 * 1024;

    private readonly ConcurrentQueue<Block> _free = new();
    private int _freeCount;

    public TransportBlocks(int blockBytes)
    {
        if (blockBytes is < MinBlockBytes or > MaxBlockBytes) throw new ArgumentOutOfRangeException(nameof(blockBytes), blockBytes, $"A transport block is {MinBlockBytes} to {MaxBlockBytes} bytes.");
        BlockBytes = blockBytes;
        MaxFreeBlocks = (int)(MaxFreeBytes / blockBytes);
    }

    public int BlockBytes { get; }

    /// <summary>How many free blocks are kept: <see cref="MaxFreeBytes"/> of them.</summary>
    public int MaxFreeBlocks { get; }

    /// <summary>Blocks free for reuse now (for tests).</summary>
    internal int FreeBlocks => Volatile.Read(ref _freeCount);

    public MemoryPool<byte> Create(MemoryPoolOptions? options = null) => new Pool(this);

    private Block Take()
    {
        if (_free.TryDequeue(out var block)) Interlocked.Decrement(ref _freeCount);
        else block = new Block(this, GC.AllocateUninitializedArray<byte>(BlockBytes, pinned: true));
        block.Lent();
        return block;
    }

    private void Return(Block block)
    {
        if (Interlocked.Increment(ref _freeCount) <= MaxFreeBlocks) _free.Enqueue(block);
        else Interlocked.Decrement(ref _freeCount);
    }

    /// <summary>Every rent is one whole block, whatever size was asked for up to the block (as Kestrel's own pool does).</summary>
    private sealed class Pool(TransportBlocks blocks) : MemoryPool<byte>
    {
        public override int MaxBufferSize => blocks.BlockBytes;

        public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
        {
            ArgumentOutOfRangeException.ThrowIfGreaterThan(minBufferSize, blocks.BlockBytes);
            return blocks.Take();
        }

        // The free list belongs to the factory, shared by its pools: nothing of its own to release.
        protected override void Dispose(bool disposing)
        {
        }
    }

    /// <summary>A pinned block and its owner object, both reused (no allocation per rent, as Kestrel's own blocks).</summary>
    private sealed class Block(TransportBlocks blocks, byte[] array) : IMemoryOwner<byte>
    {
        private readonly Memory<byte> _memory = MemoryMarshal.CreateFromPinnedArray(array, 0, array.Length);
        private int _lent;

        public Memory<byte> Memory => Volatile.Read(ref _lent) == 1 ? _memory : throw new ObjectDisposedException(nameof(IMemoryOwner<byte>));

        public void Lent() => Volatile.Write(ref _lent, 1);

        public void Dispose()
        {
            // Once per rent: a block given back twice would be handed to two owners.
            if (Interlocked.Exchange(ref _lent, 0) == 1) blocks.Return(this);
        }
    }
}
