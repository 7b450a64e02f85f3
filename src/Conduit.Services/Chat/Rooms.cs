using System.Collections.Concurrent;
using System.Threading.Channels;

namespace Conduit.Services.Chat;

/// <summary>
/// Named rooms where every message posted reaches every participant, the sender included. Each
/// participant has a bounded queue: posting never waits for a slow participant, and one whose
/// queue is full is evicted (its stream ends with <see cref="ParticipantEvictedException"/>) so it
/// never stalls the room. Shared by every service that has chat rooms.
/// </summary>
public sealed class Rooms<T> : IRoomSizes
{
    private readonly ConcurrentDictionary<string, Room> _rooms = new(StringComparer.Ordinal);

    public Rooms(int participantQueueCapacity = 256)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(participantQueueCapacity, 1);
        QueueCapacity = participantQueueCapacity;
        ChatMetrics.Track(this);
    }

    string IRoomSizes.Kind => typeof(T).FullName ?? typeof(T).Name;

    IReadOnlyList<KeyValuePair<string, int>> IRoomSizes.Sizes() =>
        [.. _rooms.Select(r => new KeyValuePair<string, int>(r.Key, r.Value.Count)).Where(r => r.Value > 0)];

    public int QueueCapacity { get; }

    /// <summary>Number of participants now in <paramref name="room"/>.</summary>
    public int CountIn(string room) => _rooms.TryGetValue(room, out var r) ? r.Count : 0;

    /// <summary>
    /// Posts a message to everyone in <paramref name="room"/> without joining it (chat.v1.Chat/Send);
    /// answers how many participants it was delivered to (0 when the room is empty).
    /// </summary>
    public int Post(string room, T message) => _rooms.TryGetValue(room, out var r) ? r.Post(message) : 0;

    /// <summary>Joins a room; dispose the participant to leave.</summary>
    public Participant Join(string room)
    {
        while (true)
        {
            var r = _rooms.GetOrAdd(room, name => new Room(this, name));
            var participant = new Participant(r, QueueCapacity);
            if (r.TryAdd(participant)) return participant;
            // The room emptied and was removed between GetOrAdd and TryAdd: take a new one.
        }
    }

    internal sealed class Room(Rooms<T> owner, string name)
    {
        private readonly object _lock = new();
        private Participant[] _members = [];
        private bool _closed;

        public int Count => Volatile.Read(ref _members).Length;

        public bool TryAdd(Participant participant)
        {
            lock (_lock)
            {
                if (_closed) return false;
                _members = [.. _members, participant];
                return true;
            }
        }

        public void Remove(Participant participant)
        {
            lock (_lock)
            {
                _members = _members.Where(m => m != participant).ToArray();
                if (_members.Length == 0)
                {
                    _closed = true;
                    owner._rooms.TryRemove(new KeyValuePair<string, Room>(name, this));
                }
            }
        }

        public int Post(T message)
        {
            var delivered = 0;
            foreach (var member in Volatile.Read(ref _members))
            {
                if (member.Queue.Writer.TryWrite(message)) delivered++;
                else member.Evict();
            }
            return delivered;
        }
    }

    /// <summary>One member of a room: post to it, read what the room delivers.</summary>
    public sealed class Participant : IDisposable
    {
        private readonly Room _room;
        private int _left;

        private readonly int _capacity;

        internal Participant(Room room, int capacity)
        {
            _room = room;
            _capacity = capacity;
            Queue = Channel.CreateBounded<T>(new BoundedChannelOptions(capacity)
            {
                FullMode = BoundedChannelFullMode.Wait, // TryWrite fails when full, and we evict
                SingleReader = true,
            });
        }

        internal Channel<T> Queue { get; }

        /// <summary>The messages delivered to this participant, in the order the room received them.</summary>
        public ChannelReader<T> Messages => Queue.Reader;

        /// <summary>Sends a message to everyone in the room, this participant included.</summary>
        public void Post(T message)
        {
            if (Volatile.Read(ref _left) != 0) throw new InvalidOperationException("This participant has left the room.");
            _room.Post(message);
        }

        /// <summary>Leaves the room; messages already delivered can still be read.</summary>
        public void Leave(Exception? error = null)
        {
            if (Interlocked.Exchange(ref _left, 1) != 0) return;
            _room.Remove(this);
            Queue.Writer.TryComplete(error);
        }

        internal void Evict() => Leave(new ParticipantEvictedException(_capacity));

        public void Dispose() => Leave();
    }
}

/// <summary>A participant fell so far behind that its queue filled up, and was removed from the room.</summary>
public sealed class ParticipantEvictedException(int queueCapacity)
    : Exception($"The participant fell more than {queueCapacity} messages behind the room and was removed from it.")
{
}
