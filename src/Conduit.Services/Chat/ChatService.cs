using Conduit.Grpc;
using Conduit.Protos.Chat.V1;
using Grpc.Core;

namespace Conduit.Services.Chat;

/// <summary>
/// chat.v1.Chat: one bidirectional stream per participant (see <see cref="RoomCall"/>). The room
/// comes from the "room" metadata (default "lobby"). Subscribe and Send are the two halves of the
/// stream as separate calls, for browsers (gRPC-Web has no request streams): the console's chat.
/// </summary>
public sealed class ChatService(Rooms<ChatMessage> rooms, TimeProvider? time = null) : Protos.Chat.V1.Chat.ChatBase
{
    public const string RoomHeader = RoomCall.RoomHeader;
    public const string DefaultRoom = RoomCall.DefaultRoom;
    public const int MaxRoomNameLength = RoomCall.MaxRoomNameLength;
    public const int MaxTextLength = 16 * 1024;

    private readonly TimeProvider _time = time ?? TimeProvider.System;

    public override Task ChatStream(IAsyncStreamReader<ChatMessage> requestStream, IServerStreamWriter<ChatMessage> responseStream, ServerCallContext context) =>
        RoomCall.RunAsync(rooms, requestStream, responseStream, context, Accept);

    /// <summary>Joins the room and streams what it delivers until the call is cancelled (the receiving half of ChatStream).</summary>
    public override async Task Subscribe(SubscribeRequest request, IServerStreamWriter<ChatMessage> responseStream, ServerCallContext context)
    {
        var token = context.CancellationToken;
        using var participant = rooms.Join(RoomOf(request.Room, context));
        try
        {
            await foreach (var message in participant.Messages.ReadAllAsync(token).ConfigureAwait(false))
            {
                await responseStream.WriteAsync(message, token).ConfigureAwait(false);
            }
        }
        catch (ParticipantEvictedException ex)
        {
            throw new RpcException(new Status(StatusCode.ResourceExhausted, ex.Message));
        }
    }

    /// <summary>Posts one message to the room (the sending half of ChatStream), checked and stamped as ChatStream does.</summary>
    public override Task<SendResponse> Send(SendRequest request, ServerCallContext context)
    {
        var room = RoomOf(request.Room, context);
        var message = Accept(request.Message ?? new ChatMessage());
        return Task.FromResult(new SendResponse { Delivered = rooms.Post(room, message) });
    }

    private static string RoomOf(string room, ServerCallContext context)
    {
        if (room.Length == 0) room = context.RequestHeaders.GetValue(RoomHeader) ?? DefaultRoom;
        if (room.Length == 0 || room.Length > MaxRoomNameLength)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, $"The room name must be 1 to {MaxRoomNameLength} characters.",
                Details.BadRequest(("room", $"1 to {MaxRoomNameLength} characters")));
        }
        return room;
    }

    private ChatMessage Accept(ChatMessage message)
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
        return delivered;
    }
}
