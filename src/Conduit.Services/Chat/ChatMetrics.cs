using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;

namespace Conduit.Services.Chat;

/// <summary>
/// Chat room sizes as observable gauges on the process-wide meter "Conduit.Chat", read only when
/// a scrape asks: rooms and participants of every <see cref="Rooms{T}"/> alive, and the sizes of
/// the <see cref="LargestRooms"/> largest rooms by name (room names are chosen by clients, so
/// reporting all of them would give a metric series per name ever used).
/// </summary>
public static class ChatMetrics
{
    public const string MeterName = "Conduit.Chat";

    /// <summary>How many rooms, per kind, the per-room gauge reports (the largest).</summary>
    public const int LargestRooms = 10;

    private static readonly Meter Meter = new(MeterName);
    private static readonly ConditionalWeakTable<object, IRoomSizes> Tracked = new();

    static ChatMetrics()
    {
        Meter.CreateObservableGauge("conduit.chat.rooms", () => Observe(sizes => sizes.Count), "{room}", "Chat rooms with at least one participant");
        Meter.CreateObservableGauge("conduit.chat.participants", () => Observe(sizes => sizes.Sum(s => s.Value)), "{participant}", "Participants in all chat rooms");
        Meter.CreateObservableGauge("conduit.chat.room.participants", ObserveLargest, "{participant}", $"Participants in each of the {LargestRooms} largest chat rooms (tag room)");
    }

    internal static void Track(IRoomSizes rooms) => Tracked.AddOrUpdate(rooms, rooms);

    private static IEnumerable<Measurement<int>> Observe(Func<IReadOnlyList<KeyValuePair<string, int>>, int> value)
    {
        foreach (var (_, rooms) in Tracked)
        {
            yield return new Measurement<int>(value(rooms.Sizes()), new KeyValuePair<string, object?>("kind", rooms.Kind));
        }
    }

    private static IEnumerable<Measurement<int>> ObserveLargest()
    {
        foreach (var (_, rooms) in Tracked)
        {
            foreach (var (room, size) in rooms.Sizes().OrderByDescending(s => s.Value).Take(LargestRooms))
            {
                yield return new Measurement<int>(size, new KeyValuePair<string, object?>("kind", rooms.Kind), new KeyValuePair<string, object?>("room", room));
            }
        }
    }
}

/// <summary>What <see cref="ChatMetrics"/> reads from a set of rooms.</summary>
internal interface IRoomSizes
{
    /// <summary>Which rooms these are: the full name of their message type (chat.v1 and user.v1 each have their own).</summary>
    string Kind { get; }

    IReadOnlyList<KeyValuePair<string, int>> Sizes();
}
