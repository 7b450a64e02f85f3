using System.Globalization;
using Conduit.Grpc;
using Conduit.Protos.User.V1;
using Conduit.Services.Chat;
using Conduit.Users.Storage;
using Google.Protobuf;
using Grpc.Core;

namespace Conduit.Services.Users;

/// <summary>
/// user.v1.UserService: a user directory on an <see cref="IUserStore"/> (SQLite or PostgreSQL),
/// with all four kinds of RPC, and chat rooms on the shared <see cref="Rooms{T}"/> mechanism.
/// Rules and guarantees: docs/users.md. The store's failures (a taken email, an unavailable, full
/// or damaged database) become statuses in <see cref="UsersExceptionMapper"/>.
/// </summary>
public sealed class UsersService(IUserStore store, Rooms<ChatMessage> rooms, TimeProvider? time = null) : UserService.UserServiceBase
{
    public const string ErrorDomain = "user.v1.UserService";

    private readonly TimeProvider _time = time ?? TimeProvider.System;

    public override async Task<User> GetUser(GetUserRequest request, ServerCallContext context)
    {
        CheckId(request.Id);
        return ToProto(await store.GetAsync(request.Id, context.CancellationToken).ConfigureAwait(false) ?? throw NotFound(request.Id));
    }

    public override async Task<User> GetUserByEmail(GetUserByEmailRequest request, ServerCallContext context)
    {
        var email = UserRules.Clean(request.Email);
        ThrowIfInvalid("The email is not valid.", UserRules.CheckEmail(email, "email"));
        var user = await store.GetByEmailAsync(email, context.CancellationToken).ConfigureAwait(false);
        return user is not null ? ToProto(user) : throw RpcException.WithDetails(StatusCode.NotFound, $"No user has the email '{ClientInput.Shorten(email)}'.",
            Details.ErrorInfo("USER_NOT_FOUND", ErrorDomain, new Dictionary<string, string> { ["email"] = ClientInput.Shorten(email) }));
    }

    public override async Task ListUsers(ListUsersRequest request, IServerStreamWriter<User> responseStream, ServerCallContext context)
    {
        var violations = new List<(string, string)>();
        if (request.Page < 0) violations.Add(("page", "must be 1 or more (0 means 1)"));
        if (request.PageSize < 0) violations.Add(("page_size", $"must be 0 (the default, {UserRules.DefaultPageSize}) to {UserRules.MaxPageSize}; larger is served as {UserRules.MaxPageSize}"));
        long afterId = 0;
        if (request.PageToken.Length > 0)
        {
            if (!PageToken.TryDecode(request.PageToken, out afterId)) violations.Add(("page_token", "not a token this service issued (use the next-page-token trailer)"));
            if (request.Page != 0) violations.Add(("page", "give either page or page_token, not both"));
        }
        ThrowIfInvalid("The page request is not valid.", violations);

        var size = request.PageSize == 0 ? UserRules.DefaultPageSize : Math.Min(request.PageSize, UserRules.MaxPageSize);
        var skip = request.PageToken.Length > 0 ? 0 : (Math.Max(request.Page, 1) - 1L) * size;
        var token = context.CancellationToken;
        var sent = 0;
        long lastId = afterId;
        // Each row is written as it is read; HTTP/2 flow control holds the query back when the
        // client reads slowly, and cancelling the call cancels the query.
        await foreach (var user in store.ListAsync(afterId, skip, size, token).ConfigureAwait(false))
        {
            await responseStream.WriteAsync(ToProto(user), token).ConfigureAwait(false);
            sent++;
            lastId = user.Id;
        }
        if (sent == size) context.ResponseTrailers.Add(PageToken.TrailerName, PageToken.Encode(lastId));
    }

    [DryRunSupported]
    public override async Task<CreateUsersResponse> CreateUsers(IAsyncStreamReader<CreateUserRequest> requestStream, ServerCallContext context)
    {
        var token = context.CancellationToken;
        var batch = new List<NewUser>();
        // Each request is checked as it arrives, so a bad one ends the call at once; nothing is
        // written until the stream is complete and valid, then all in one transaction.
        await foreach (var request in requestStream.ReadAllAsync(token).ConfigureAwait(false))
        {
            var index = batch.Count;
            if (index == UserRules.MaxBatchSize)
            {
                throw RpcException.WithDetails(StatusCode.ResourceExhausted,
                    $"Request {index}: CreateUsers creates at most {UserRules.MaxBatchSize} users per call; nothing was created. Split the stream into several calls.",
                    Details.QuotaFailure(("CreateUsers", $"at most {UserRules.MaxBatchSize} users per call")), IndexInfo("TOO_MANY_USERS", index));
            }
            var name = UserRules.Clean(request.Name);
            var email = UserRules.Clean(request.Email);
            var violations = UserRules.CheckName(name, $"requests[{index}].name").Concat(UserRules.CheckEmail(email, $"requests[{index}].email")).ToArray();
            if (violations.Length > 0)
            {
                throw RpcException.WithDetails(StatusCode.InvalidArgument,
                    $"Request {index} is invalid ({string.Join("; ", violations.Select(v => v.Field + ": " + v.Description))}); nothing was created.",
                    Details.BadRequest(violations), IndexInfo("INVALID_USER", index));
            }
            batch.Add(new NewUser(name, email));
        }
        // A taken email or a failing database: UsersExceptionMapper.
        var created = await store.CreateAsync(batch, DryRun.IsRequested(context), token).ConfigureAwait(false);
        var response = new CreateUsersResponse { Count = created.Count };
        response.Users.AddRange(created.Select(ToProto));
        return response;
    }

    [DryRunSupported]
    public override async Task<User> UpdateUser(UpdateUserRequest request, ServerCallContext context)
    {
        CheckId(request.Id);
        var name = UserRules.Clean(request.Name);
        var email = UserRules.Clean(request.Email);
        var violations = new List<(string, string)>();
        if (request.Name.Length > 0) violations.AddRange(UserRules.CheckName(name, "name"));
        if (request.Email.Length > 0) violations.AddRange(UserRules.CheckEmail(email, "email"));
        if (request.Name.Length == 0 && request.Email.Length == 0) violations.Add(("name", "give a new name, a new email, or both"));
        ThrowIfInvalid("The update is not valid.", violations);
        var updated = await store.UpdateAsync(request.Id, request.Name.Length > 0 ? name : null, request.Email.Length > 0 ? email : null,
            DryRun.IsRequested(context), context.CancellationToken).ConfigureAwait(false);
        return ToProto(updated ?? throw NotFound(request.Id));
    }

    [DryRunSupported]
    public override async Task<User> DeleteUser(DeleteUserRequest request, ServerCallContext context)
    {
        CheckId(request.Id);
        var deleted = await store.DeleteAsync(request.Id, DryRun.IsRequested(context), context.CancellationToken).ConfigureAwait(false);
        return ToProto(deleted ?? throw NotFound(request.Id));
    }

    public override Task Chat(IAsyncStreamReader<ChatMessage> requestStream, IServerStreamWriter<ChatMessage> responseStream, ServerCallContext context) =>
        RoomCall.RunAsync(rooms, requestStream, responseStream, context, AcceptChat);

    private ChatMessage AcceptChat(ChatMessage message)
    {
        if (message.User.Length == 0)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, "A chat message needs a user.", Details.BadRequest(("user", "required")));
        }
        if (message.Message.Length > UserRules.MaxChatMessageLength)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, $"A chat message holds at most {UserRules.MaxChatMessageLength} characters.",
                Details.BadRequest(("message", $"at most {UserRules.MaxChatMessageLength} characters")));
        }
        var delivered = message.Clone();
        delivered.SentUnixMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
        return delivered;
    }

    public static User ToProto(UserRecord user) => new()
    {
        Id = user.Id,
        Name = user.Name,
        Email = user.Email,
        CreatedUnixMs = user.CreatedUnixMs,
        UpdatedUnixMs = user.UpdatedUnixMs,
    };

    private static void CheckId(long id)
    {
        if (id <= 0) throw RpcException.WithDetails(StatusCode.InvalidArgument, "A user id is a positive number.", Details.BadRequest(("id", "must be 1 or more")));
    }

    private static void ThrowIfInvalid(string message, IEnumerable<(string Field, string Description)> violations)
    {
        var all = violations.ToArray();
        if (all.Length > 0)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, $"{message} {string.Join("; ", all.Select(v => v.Field + ": " + v.Description))}",
                Details.BadRequest(all));
        }
    }

    private static RpcException NotFound(long id) =>
        RpcException.WithDetails(StatusCode.NotFound, $"No user has the id {id}.",
            Details.ErrorInfo("USER_NOT_FOUND", ErrorDomain, new Dictionary<string, string> { ["id"] = id.ToString(CultureInfo.InvariantCulture) }));

    private static IMessage IndexInfo(string reason, int index, params (string Key, string Value)[] more)
    {
        var metadata = new Dictionary<string, string> { ["index"] = index.ToString(CultureInfo.InvariantCulture) };
        foreach (var (key, value) in more) metadata[key] = value;
        return Details.ErrorInfo(reason, ErrorDomain, metadata);
    }
}
