using Conduit.Grpc;
using Grpc.Core;

namespace Conduit.Services.Chat;

/// <summary>
/// One participant's bidirectional stream in a <see cref="Rooms{T}"/> room: what every chat RPC
/// (chat.v1.Chat/ChatStream, user.v1.UserService/Chat) does, whatever its message type. The room
/// comes from the "room" metadata (default "lobby"). Each request is checked and stamped by the
/// service's <c>accept</c> function and posted to the room; everything the room delivers is
/// written back. When the client half-closes, the participant leaves and the call ends once what
/// was already delivered has been sent; a participant that falls behind ends RESOURCE_EXHAUSTED.
/// </summary>
public static class RoomCall
{
    public const string RoomHeader = "room";
    public const string DefaultRoom = "lobby";
    public const int MaxRoomNameLength = 128;

    public static async Task RunAsync<T>(Rooms<T> rooms, IAsyncStreamReader<T> requests, IServerStreamWriter<T> responses, ServerCallContext context, Func<T, T> accept)
    {
        var room = context.RequestHeaders.GetValue(RoomHeader) ?? DefaultRoom;
        if (room.Length == 0 || room.Length > MaxRoomNameLength)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, $"The room name must be 1 to {MaxRoomNameLength} characters.",
                Details.BadRequest((RoomHeader, $"1 to {MaxRoomNameLength} characters")));
        }
        var token = context.CancellationToken;
        using var participant = rooms.Join(room);
        // The pump reads the request stream while this method writes the response stream. It must
        // be over before the handler returns, whichever side ends first (an eviction ends the
        // writing side while the pump still waits for the client's next message).
        using var pumpCts = CancellationTokenSource.CreateLinkedTokenSource(token);
        var pump = PumpAsync(requests, participant, accept, pumpCts.Token);
        try
        {
            await foreach (var message in participant.Messages.ReadAllAsync(token).ConfigureAwait(false))
            {
                await responses.WriteAsync(message, token).ConfigureAwait(false);
            }
        }
        catch (ParticipantEvictedException ex)
        {
            throw new RpcException(new Status(StatusCode.ResourceExhausted, ex.Message));
        }
        finally
        {
            await pumpCts.CancelAsync().ConfigureAwait(false);
            await pump.ConfigureAwait(false);
        }
    }

    private static async Task PumpAsync<T>(IAsyncStreamReader<T> requests, Rooms<T>.Participant participant, Func<T, T> accept, CancellationToken token)
    {
        try
        {
            await foreach (var message in requests.ReadAllAsync(token).ConfigureAwait(false))
            {
                participant.Post(accept(message));
            }
            participant.Leave();
        }
        catch (InvalidOperationException) when (participant.Messages.Completion.IsCompleted)
        {
            // Evicted while posting: the writer side reports it.
        }
        catch (Exception ex)
        {
            participant.Leave(ex);
        }
    }
}
