using Conduit.Protos.Chat.V1;
using Conduit.Rpc;
using Conduit.Rpc.Server;

namespace Conduit.Services.Chat;

/// <summary>
/// chat.v1.Chat: one bidirectional stream per participant. The room comes from the "room"
/// metadata (default "lobby"). When the client half-closes, the participant leaves the room and
/// the call ends once what was already delivered to it has been sent.
/// </summary>
public sealed class ChatService(Rooms<ChatMessage> rooms, TimeProvider? time = null) : Protos.Chat.V1.Chat.ChatBase
{
    public const string RoomHeader = "room";
    public const string DefaultRoom = "lobby";
    public const int MaxRoomNameLength = 128;
    public const int MaxTextLength = 16 * 1024;

    private readonly TimeProvider _time = time ?? TimeProvider.System;

    public override async Task ChatStream(IAsyncStreamReader<ChatMessage> requestStream, IServerStreamWriter<ChatMessage> responseStream, ServerCallContext context)
    {
        var room = context.RequestHeaders.GetValue(RoomHeader) ?? DefaultRoom;
        if (room.Length == 0 || room.Length > MaxRoomNameLength)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, $"The room name must be 1 to {MaxRoomNameLength} characters.",
                Details.BadRequest((RoomHeader, "1 to 128 characters")));
        }
        var token = context.CancellationToken;
        using var participant = rooms.Join(room);
        // The pump reads the request stream while this method writes the response stream. It must
        // be over before the handler returns, whichever side ends first: the server reads the
        // request body itself once the call is complete.
        using var pumpCts = CancellationTokenSource.CreateLinkedTokenSource(token);
        var pump = PumpAsync(requestStream, participant, pumpCts.Token);
        try
        {
            await foreach (var message in participant.Messages.ReadAllAsync(token).ConfigureAwait(false))
            {
                await responseStream.WriteAsync(message, token).ConfigureAwait(false);
            }
        }
        catch (ParticipantEvictedException ex)
        {
            throw new RpcException(StatusCode.ResourceExhausted, ex.Message);
        }
        finally
        {
            await pumpCts.CancelAsync().ConfigureAwait(false);
            await pump.ConfigureAwait(false);
        }
    }

    private async Task PumpAsync(IAsyncStreamReader<ChatMessage> requests, Rooms<ChatMessage>.Participant participant, CancellationToken token)
    {
        try
        {
            await foreach (var message in requests.WithCancellation(token).ConfigureAwait(false))
            {
                if (message.User.Length == 0)
                {
                    throw RpcException.WithDetails(StatusCode.InvalidArgument, "A chat message needs a user.", Details.BadRequest(("user", "required")));
                }
                if (message.Text.Length > MaxTextLength)
                {
                    throw RpcException.WithDetails(StatusCode.InvalidArgument, $"A chat message holds at most {MaxTextLength} characters.",
                        Details.BadRequest(("text", $"at most {MaxTextLength} characters")));
                }
                var delivered = message.Clone();
                delivered.SentUnixMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
                participant.Post(delivered);
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
