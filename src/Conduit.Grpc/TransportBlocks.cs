using System.Buffers;
using System.Collections.Concurrent;
using Microsoft.AspNetCore.Connections;

namespace Conduit.Grpc;

/// <summary>
/// Kestrel's connection buffers in blocks of a chosen size. Kestrel's own pool hands out 4 KiB
/// blocks, and its socket transport reads into whatever is left of one, so a 1 MiB request takes
/// 256 receive calls, each waking the connection's reader; with 16 KiB blocks a read takes a whole
/// HTTP/2 DATA frame, and the pipes in between (the HTTP/2 stream's request body, AuthorityRepair)
/// hold a message in 4x fewer pieces. Measured (docs/performance.md): about a sixth less CPU per
/// MB of 4 KiB records through ProduceBatch. The cost is memory: a pipe holding a few bytes (an
/// idle stream's response) holds a whole block.
/// <para>
/// Registered as the <see cref="IMemoryPoolFactory{T}"/> Kestrel's socket transport creates its
/// pools with (<c>Conduit:Connections:TransportBlockBytes</c>; 0 keeps Kestrel's own pool, with its
/// idle eviction and aspnetcore.memorypool metrics). Blocks are pinned (sockets read into them
/// without pinning per call) and reused; at most <see cref="MaxFreeBlocks"/> are kept free per
/// pool, the rest left to the GC.
/// </para>
/// </summary>
public sealed class TransportBlocks(int blockBytes) : IMemoryPoolFactory<byte>
{
    public const int MinBlockBytes = 4096;
    public const int MaxBlockBytes = 1024 * 1024;
    public const int MaxFreeBlocks = 1024;

    public int BlockBytes { get; } = blockBytes is >= MinBlockBytes and <= MaxBlockBytes
        ? blockBytes
        : throw new ArgumentOutOfRangeException(nameof(blockBytes), blockBytes, $"A transport block is {MinBlockBytes} to {MaxBlockBytes} bytes.");

    public MemoryPool<byte> Create(MemoryPoolOptions? options = null) => new Pool(BlockBytes);

    /// <summary>Every rent is one whole block, whatever size was asked for up to the block (as Kestrel's own pool does).</summary>
    internal sealed class Pool(int blockBytes) : MemoryPool<byte>
    {
        private readonly ConcurrentQueue<byte[]> _free = new();
        private int _freeCount;

        public override int MaxBufferSize => blockBytes;

        /// <summary>Blocks free for reuse now (for tests).</summary>
        internal int FreeBlocks => Volatile.Read(ref _freeCount);

        public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
        {
            ArgumentOutOfRangeException.ThrowIfGreaterThan(minBufferSize, blockBytes);
            if (_free.TryDequeue(out var block))
            {
                Interlocked.Decrement(ref _freeCount);
                return new Lease(this, block);
            }
            return new Lease(this, GC.AllocateUninitializedArray<byte>(blockBytes, pinned: true));
        }

        private void Return(byte[] block)
        {
            if (Interlocked.Increment(ref _freeCount) <= MaxFreeBlocks) _free.Enqueue(block);
            else Interlocked.Decrement(ref _freeCount);
        }

        protected override void Dispose(bool disposing)
        {
            while (_free.TryDequeue(out _)) Interlocked.Decrement(ref _freeCount);
        }

        private sealed class Lease(Pool pool, byte[] block) : IMemoryOwner<byte>
        {
            private byte[]? _block = block;

            public Memory<byte> Memory => _block ?? throw new ObjectDisposedException(nameof(IMemoryOwner<byte>));

            public void Dispose()
            {
                // Once only: a block given back twice would be handed to two owners.
                if (Interlocked.Exchange(ref _block, null) is { } returned) pool.Return(returned);
            }
        }
    }
}
