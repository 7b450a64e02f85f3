using System.Globalization;
using Conduit.Grpc;
using Conduit.Protos.Seeds.SystemDesign;
using Conduit.Services.Users;
using Grpc.Core;
using V1 = Conduit.Protos.User.V1;

namespace Conduit.Services.Seeds;

/// <summary>
/// user.UserService of the system-design guide (protos/seeds/system-design/user.proto):
/// user.v1.UserService's GetUser, ListUsers, CreateUsers and Chat on the same directory and
/// rooms. The guide's ids are int32, user.v1's int64: a user whose id does not fit int32 is
/// answered OUT_OF_RANGE (ListUsers ends there, after the users before it), never truncated into
/// another user's id. CreateUsers commits before ids are known: when a created id does not fit,
/// the users exist and the OUT_OF_RANGE message says so and names their ids.
/// </summary>
public sealed class SystemDesignUserService(UsersService users) : UserService.UserServiceBase
{
    public const string ErrorDomain = "user.UserService";

    public override async Task<User> GetUser(GetUserRequest request, ServerCallContext context) =>
        ToSeed(await users.GetUser(new V1.GetUserRequest { Id = request.Id }, context).ConfigureAwait(false));

    public override Task ListUsers(ListUsersRequest request, IServerStreamWriter<User> responseStream, ServerCallContext context) =>
        users.ListUsers(new V1.ListUsersRequest { Page = request.Page, PageSize = request.PageSize },
            new MappedWriter<V1.User, User>(responseStream, ToSeed), context);

    [DryRunSupported]
    public override async Task<CreateUsersResponse> CreateUsers(IAsyncStreamReader<CreateUserRequest> requestStream, ServerCallContext context)
    {
        var created = await users.CreateUsers(
            new MappedReader<CreateUserRequest, V1.CreateUserRequest>(requestStream, r => new V1.CreateUserRequest { Name = r.Name, Email = r.Email }),
            context).ConfigureAwait(false);
        var tooLarge = created.Users.Where(u => !FitsInt32(u.Id)).Select(u => u.Id.ToString(CultureInfo.InvariantCulture)).ToArray();
        if (tooLarge.Length > 0)
        {
            throw RpcException.WithDetails(StatusCode.OutOfRange,
                $"The {created.Count} users were created, but the ids {string.Join(", ", tooLarge)} do not fit the int32 ids of package user; " +
                "read them through user.v1.UserService, whose ids are int64.",
                Details.ErrorInfo("ID_PAST_INT32", ErrorDomain, new Dictionary<string, string>
                {
                    ["created"] = created.Count.ToString(CultureInfo.InvariantCulture),
                    ["ids"] = string.Join(",", created.Users.Select(u => u.Id.ToString(CultureInfo.InvariantCulture))),
                }));
        }
        var response = new CreateUsersResponse { Count = created.Count };
        response.Users.AddRange(created.Users.Select(ToSeed));
        return response;
    }

    public override Task Chat(IAsyncStreamReader<ChatMessage> requestStream, IServerStreamWriter<ChatMessage> responseStream, ServerCallContext context) =>
        users.Chat(
            new MappedReader<ChatMessage, V1.ChatMessage>(requestStream, m => new V1.ChatMessage { User = m.User, Message = m.Message }),
            new MappedWriter<V1.ChatMessage, ChatMessage>(responseStream, m => new ChatMessage { User = m.User, Message = m.Message }),
            context);

    private static bool FitsInt32(long id) => id is >= int.MinValue and <= int.MaxValue;

    /// <summary>The guide's User, or OUT_OF_RANGE when the id does not fit its int32.</summary>
    private static User ToSeed(V1.User user) => FitsInt32(user.Id)
        ? new User { Id = (int)user.Id, Name = user.Name, Email = user.Email }
        : throw RpcException.WithDetails(StatusCode.OutOfRange,
            $"User {user.Id} has an id past int32, which package user cannot carry; read it through user.v1.UserService, whose ids are int64.",
            Details.ErrorInfo("ID_PAST_INT32", ErrorDomain, new Dictionary<string, string> { ["id"] = user.Id.ToString(CultureInfo.InvariantCulture) }));
}
