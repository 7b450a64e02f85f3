using Conduit.Grpc;
using Conduit.Protos.Chat.V1;
using Grpc.Core;

namespace Conduit.Services.Chat;

/// <summary>
/// chat.v1.Chat: one bidirectional stream per participant (see <see cref="RoomCall"/>). The room
/// comes from the "room" metadata (default "lobby").
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
