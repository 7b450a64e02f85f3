using Conduit.Grpc;
using Conduit.Protos.User.V1;
using Google.Rpc;
using Grpc.Core;

namespace Conduit.Users.Tests;

/// <summary>
/// Every rule of user.v1.UserService, black-box through the generated client against an
/// in-process server; run once per database (SQLite, PostgreSQL) by the subclasses below.
/// </summary>
public abstract class UsersContractTests(IBackend backend) : IAsyncLifetime
{
    protected UsersHost Host { get; private set; } = null!;

    protected UserService.UserServiceClient Client => Host.Client;

    public async Task InitializeAsync() => Host = await UsersHost.StartAsync((await backend.NewDatabaseAsync()).Store);

    public async Task DisposeAsync() => await Host.DisposeAsync();

    private static CallOptions Timeout(Metadata? headers = null) => new CallOptions(headers).WithTimeout(TimeSpan.FromSeconds(30));

    private static Metadata DryRunHeaders => new() { DryRun.Header };

    private async Task<CreateUsersResponse> Create(IEnumerable<(string Name, string Email)> users, Metadata? headers = null)
    {
        using var call = Client.CreateUsers(Timeout(headers));
        try
        {
            foreach (var (name, email) in users) await call.RequestStream.WriteAsync(new CreateUserRequest { Name = name, Email = email });
            await call.RequestStream.CompleteAsync();
        }
        catch (Exception ex) when (ex is RpcException or InvalidOperationException)
        {
            // The server ended the call early; ResponseAsync says how.
        }
        return await call.ResponseAsync;
    }

    private Task<CreateUsersResponse> Create(params (string Name, string Email)[] users) => Create(users.AsEnumerable());

    private static IEnumerable<(string, string)> Numbered(int count, int from = 0, int nameLength = 0) =>
        Enumerable.Range(from, count).Select(i => ($"user {i}".PadRight(Math.Max(nameLength, 1), 'x'), $"user{i}@example.com"));

    private async Task<(List<User> Users, string? NextToken)> List(int page = 0, int pageSize = 0, string token = "")
    {
        using var call = Client.ListUsers(new ListUsersRequest { Page = page, PageSize = pageSize, PageToken = token }, Timeout());
        var users = new List<User>();
        await foreach (var user in call.ResponseStream.ReadAllAsync()) users.Add(user);
        return (users, call.GetTrailers().GetValue("next-page-token"));
    }

    private async Task<List<User>> ListAll(int pageSize = 1000)
    {
        var all = new List<User>();
        var token = "";
        while (true)
        {
            var (users, next) = await List(pageSize: pageSize, token: token);
            all.AddRange(users);
            if (next is null) return all;
            token = next;
        }
    }

    private static async Task<RpcException> Fails(StatusCode code, Func<Task> call)
    {
        var ex = await Assert.ThrowsAnyAsync<RpcException>(call);
        Assert.True(code == ex.StatusCode, $"expected {code}, got {ex.StatusCode}: {ex.Status.Detail}");
        return ex;
    }

    private static string[] Fields(RpcException ex) => ex.GetDetail<BadRequest>()!.FieldViolations.Select(v => v.Field).ToArray();

    // ---- GetUser -------------------------------------------------------------------------------

    [Fact]
    public async Task GetUser_returns_what_CreateUsers_stored()
    {
        var created = (await Create(("Ann Lee", "ann@example.com"))).Users.Single();
        Assert.True(created.Id > 0);
        var user = await Client.GetUserAsync(new GetUserRequest { Id = created.Id }, Timeout());
        Assert.Equal((created.Id, "Ann Lee", "ann@example.com"), (user.Id, user.Name, user.Email));
        Assert.True(user.CreatedUnixMs > 0);
        Assert.Equal(user.CreatedUnixMs, user.UpdatedUnixMs);
    }

    [Fact]
    public async Task GetUser_of_an_id_nobody_has_is_not_found_with_error_info()
    {
        await Create(("Ann", "ann@example.com"));
        var ex = await Fails(StatusCode.NotFound, () => Client.GetUserAsync(new GetUserRequest { Id = 4242 }, Timeout()).ResponseAsync);
        var info = ex.GetDetail<ErrorInfo>()!;
        Assert.Equal(("USER_NOT_FOUND", "4242"), (info.Reason, info.Metadata["id"]));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-5)]
    public async Task GetUser_without_a_valid_id_is_invalid_argument(long id)
    {
        var ex = await Fails(StatusCode.InvalidArgument, () => Client.GetUserAsync(new GetUserRequest { Id = id }, Timeout()).ResponseAsync);
        Assert.Equal(["id"], Fields(ex));
    }

    [Fact]
    public async Task GetUserByEmail_compares_case_insensitively()
    {
        var ann = (await Create(("Ann", "Ann.Lee@Example.com"))).Users.Single();
        var found = await Client.GetUserByEmailAsync(new GetUserByEmailRequest { Email = "ann.lee@EXAMPLE.COM" }, Timeout());
        Assert.Equal(ann.Id, found.Id);
        Assert.Equal("Ann.Lee@Example.com", found.Email); // stored as given
        await Fails(StatusCode.NotFound, () => Client.GetUserByEmailAsync(new GetUserByEmailRequest { Email = "bob@example.com" }, Timeout()).ResponseAsync);
        var bad = await Fails(StatusCode.InvalidArgument, () => Client.GetUserByEmailAsync(new GetUserByEmailRequest { Email = "nope" }, Timeout()).ResponseAsync);
        Assert.Equal(["email"], Fields(bad));
    }

    // ---- Validation ----------------------------------------------------------------------------

    [Theory]
    [InlineData("", "ann@example.com", "requests[0].name")]
    [InlineData("   ", "ann@example.com", "requests[0].name")]
    [InlineData("Ann", "", "requests[0].email")]
    [InlineData("Ann", "ann", "requests[0].email")]
    [InlineData("Ann", "ann@", "requests[0].email")]
    [InlineData("Ann", "@example.com", "requests[0].email")]
    [InlineData("Ann", "ann@exa mple.com", "requests[0].email")]
    [InlineData("Ann", "ann@-example.com", "requests[0].email")]
    [InlineData("Ann", "ann@@example.com", "requests[0].email")]
    [InlineData("Ann\nLee", "ann@example.com", "requests[0].name")]
    public async Task A_missing_name_or_malformed_email_is_invalid_argument_with_the_field(string name, string email, string field)
    {
        var ex = await Fails(StatusCode.InvalidArgument, () => Create((name, email)));
        Assert.Equal([field], Fields(ex));
        Assert.Empty(await ListAll());
    }

    [Fact]
    public async Task Both_bad_fields_are_reported_together()
    {
        var ex = await Fails(StatusCode.InvalidArgument, () => Create(("", "not-an-email")));
        Assert.Equal(["requests[0].name", "requests[0].email"], Fields(ex));
    }

    [Fact]
    public async Task Too_long_names_and_emails_are_invalid_argument()
    {
        var name = await Fails(StatusCode.InvalidArgument, () => Create((new string('n', 201), "ann@example.com")));
        Assert.Equal(["requests[0].name"], Fields(name));
        var email = await Fails(StatusCode.InvalidArgument, () => Create(("Ann", new string('a', 64) + "@" + string.Join('.', Enumerable.Repeat(new string('d', 63), 4)))));
        Assert.Equal(["requests[0].email"], Fields(email));
        await Create((new string('n', 200), "ann+tag.x@sub-domain.example.co.uk")); // the limits themselves are fine
    }

    [Fact]
    public async Task Surrounding_whitespace_is_trimmed()
    {
        var user = (await Create(("  Ann Lee ", " ann@example.com  "))).Users.Single();
        Assert.Equal(("Ann Lee", "ann@example.com"), (user.Name, user.Email));
    }

    [Fact]
    public async Task A_duplicate_email_in_any_case_is_already_exists_and_keeps_the_stored_user()
    {
        var ann = (await Create(("Ann", "ann@example.com"))).Users.Single();
        var ex = await Fails(StatusCode.AlreadyExists, () => Create(("Other Ann", "ANN@Example.COM")));
        var info = ex.GetDetail<ErrorInfo>()!;
        Assert.Equal(("EMAIL_TAKEN", "0", "ANN@Example.COM"), (info.Reason, info.Metadata["index"], info.Metadata["email"]));
        var stored = Assert.Single(await ListAll());
        Assert.Equal((ann.Id, "Ann"), (stored.Id, stored.Name));
    }

    // ---- CreateUsers: all or nothing --------------------------------------------------------------

    [Fact]
    public async Task CreateUsers_creates_a_whole_stream_in_order_with_increasing_ids()
    {
        var response = await Create(Numbered(25));
        Assert.Equal(25, response.Count);
        Assert.Equal(Enumerable.Range(0, 25).Select(i => $"user{i}@example.com"), response.Users.Select(u => u.Email));
        Assert.Equal(response.Users.Select(u => u.Id).Order(), response.Users.Select(u => u.Id));
        Assert.Equal(25, response.Users.Select(u => u.Id).Distinct().Count());
        Assert.Equal(response.Users.Select(u => u.Id), (await ListAll()).Select(u => u.Id));
    }

    [Fact]
    public async Task An_empty_stream_creates_nothing()
    {
        var response = await Create();
        Assert.Equal(0, response.Count);
        Assert.Empty(await ListAll());
    }

    [Fact]
    public async Task One_invalid_request_rolls_back_the_batch_and_the_status_names_its_index()
    {
        await Create(("Keep", "keep@example.com"));
        var batch = Numbered(3).Append(("Bad", "bad-email")).Concat(Numbered(3, from: 10)).ToList();
        var ex = await Fails(StatusCode.InvalidArgument, () => Create(batch));
        Assert.Contains("Request 3", ex.Status.Detail);
        Assert.Equal(["requests[3].email"], Fields(ex));
        Assert.Equal("3", ex.GetDetail<ErrorInfo>()!.Metadata["index"]);
        Assert.Equal(["keep@example.com"], (await ListAll()).Select(u => u.Email));
    }

    [Fact]
    public async Task A_request_that_collides_with_a_stored_email_rolls_back_rows_already_inserted()
    {
        await Create(("Taken", "taken@example.com"));
        // Requests 0 and 1 are inserted inside the transaction before request 2 fails on the
        // unique index; the rollback must take them out again.
        var ex = await Fails(StatusCode.AlreadyExists, () => Create(("A", "a@example.com"), ("B", "b@example.com"), ("C", "TAKEN@example.com"), ("D", "d@example.com")));
        Assert.Equal("2", ex.GetDetail<ErrorInfo>()!.Metadata["index"]);
        Assert.Contains("Request 2", ex.Status.Detail);
        Assert.Equal(["taken@example.com"], (await ListAll()).Select(u => u.Email));
        // The emails of the rolled-back batch are free again.
        Assert.Equal(2, (await Create(("A", "a@example.com"), ("B", "b@example.com"))).Count);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(499)]
    [InlineData(500)]
    [InlineData(777)]
    public async Task A_collision_deep_in_a_large_batch_names_its_index(int index)
    {
        await Create(("Taken", "taken@example.com"));
        var batch = Numbered(800).ToList();
        batch[index] = ("Collides", "Taken@Example.com");
        var ex = await Fails(StatusCode.AlreadyExists, () => Create(batch));
        Assert.Equal(index.ToString(System.Globalization.CultureInfo.InvariantCulture), ex.GetDetail<ErrorInfo>()!.Metadata["index"]);
        Assert.Equal(["taken@example.com"], (await ListAll()).Select(u => u.Email));
    }

    [Fact]
    public async Task The_same_email_twice_in_one_batch_names_the_second_index()
    {
        var ex = await Fails(StatusCode.AlreadyExists, () => Create(("A", "a@example.com"), ("B", "b@example.com"), ("A again", "A@EXAMPLE.com")));
        Assert.Equal("2", ex.GetDetail<ErrorInfo>()!.Metadata["index"]);
        Assert.Empty(await ListAll());
    }

    [Fact]
    public async Task A_client_that_cancels_mid_stream_creates_nothing()
    {
        using var cts = new CancellationTokenSource();
        using var call = Client.CreateUsers(new CallOptions(cancellationToken: cts.Token).WithTimeout(TimeSpan.FromSeconds(30)));
        foreach (var (name, email) in Numbered(5)) await call.RequestStream.WriteAsync(new CreateUserRequest { Name = name, Email = email });
        await cts.CancelAsync();
        await Fails(StatusCode.Cancelled, () => call.ResponseAsync);
        // A later call sees the server done with the cancelled one: nothing of it was stored.
        Assert.Equal(1, (await Create(("After", "after@example.com"))).Count);
        Assert.Equal(["after@example.com"], (await ListAll()).Select(u => u.Email));
    }

    [Fact]
    public async Task More_than_the_batch_limit_is_resource_exhausted_and_creates_nothing()
    {
        var ex = await Fails(StatusCode.ResourceExhausted, () => Create(Numbered(10_001)));
        Assert.NotNull(ex.GetDetail<QuotaFailure>());
        Assert.Equal("10000", ex.GetDetail<ErrorInfo>()!.Metadata["index"]);
        Assert.Empty(await ListAll());
    }

    // ---- Dry run -------------------------------------------------------------------------------

    [Fact]
    public async Task A_dry_run_CreateUsers_answers_as_if_done_and_stores_nothing()
    {
        var response = await Create(Numbered(3), DryRunHeaders);
        Assert.Equal(3, response.Count);
        Assert.All(response.Users, u => Assert.Equal(0, u.Id));
        Assert.Equal("user1@example.com", response.Users[1].Email);
        Assert.Empty(await ListAll());
        // Then for real: the ids a dry run did not take are the first ones.
        var real = await Create(Numbered(3));
        Assert.Equal(3, real.Count);
    }

    [Fact]
    public async Task A_dry_run_reports_the_same_errors_as_the_real_call()
    {
        await Create(("Taken", "taken@example.com"));
        var taken = await Fails(StatusCode.AlreadyExists, () => Create([("A", "a@example.com"), ("T", "Taken@example.com")], DryRunHeaders));
        Assert.Equal("1", taken.GetDetail<ErrorInfo>()!.Metadata["index"]);
        await Fails(StatusCode.AlreadyExists, () => Create([("A", "a@example.com"), ("A", "a@example.com")], DryRunHeaders));
        await Fails(StatusCode.InvalidArgument, () => Create([("", "x@example.com")], DryRunHeaders));
        Assert.Single(await ListAll());
    }

    [Fact]
    public async Task Dry_run_update_and_delete_change_nothing()
    {
        var ann = (await Create(("Ann", "ann@example.com"))).Users.Single();
        var would = await Client.UpdateUserAsync(new UpdateUserRequest { Id = ann.Id, Name = "Anna" }, Timeout(DryRunHeaders));
        Assert.Equal("Anna", would.Name);
        var deleted = await Client.DeleteUserAsync(new DeleteUserRequest { Id = ann.Id }, Timeout(DryRunHeaders));
        Assert.Equal(ann.Id, deleted.Id);
        var stored = await Client.GetUserAsync(new GetUserRequest { Id = ann.Id }, Timeout());
        Assert.Equal(("Ann", ann.UpdatedUnixMs), (stored.Name, stored.UpdatedUnixMs));
    }

    // ---- Update and delete -----------------------------------------------------------------------

    [Fact]
    public async Task UpdateUser_changes_only_the_fields_given()
    {
        var ann = (await Create(("Ann", "ann@example.com"))).Users.Single();
        var renamed = await Client.UpdateUserAsync(new UpdateUserRequest { Id = ann.Id, Name = "Ann Lee" }, Timeout());
        Assert.Equal(("Ann Lee", "ann@example.com"), (renamed.Name, renamed.Email));
        var moved = await Client.UpdateUserAsync(new UpdateUserRequest { Id = ann.Id, Email = "ann@lee.example" }, Timeout());
        Assert.Equal(("Ann Lee", "ann@lee.example"), (moved.Name, moved.Email));
        Assert.Equal(moved, await Client.GetUserAsync(new GetUserRequest { Id = ann.Id }, Timeout()));
        // The old email is free, and a user may change the case of its own email.
        await Create(("Other", "ann@example.com"));
        var recased = await Client.UpdateUserAsync(new UpdateUserRequest { Id = ann.Id, Email = "ANN@lee.example" }, Timeout());
        Assert.Equal("ANN@lee.example", recased.Email);
    }

    [Fact]
    public async Task UpdateUser_rules_not_found_invalid_and_taken()
    {
        var ann = (await Create(("Ann", "ann@example.com"), ("Bob", "bob@example.com"))).Users[0];
        await Fails(StatusCode.NotFound, () => Client.UpdateUserAsync(new UpdateUserRequest { Id = 999, Name = "X" }, Timeout()).ResponseAsync);
        var bad = await Fails(StatusCode.InvalidArgument, () => Client.UpdateUserAsync(new UpdateUserRequest { Id = ann.Id, Email = "bad" }, Timeout()).ResponseAsync);
        Assert.Equal(["email"], Fields(bad));
        await Fails(StatusCode.InvalidArgument, () => Client.UpdateUserAsync(new UpdateUserRequest { Id = ann.Id }, Timeout()).ResponseAsync);
        await Fails(StatusCode.AlreadyExists, () => Client.UpdateUserAsync(new UpdateUserRequest { Id = ann.Id, Email = "BOB@example.com" }, Timeout()).ResponseAsync);
        Assert.Equal("ann@example.com", (await Client.GetUserAsync(new GetUserRequest { Id = ann.Id }, Timeout())).Email);
    }

    [Fact]
    public async Task DeleteUser_removes_the_user_and_ids_are_never_reused()
    {
        var users = (await Create(Numbered(3))).Users;
        var last = users[2];
        var deleted = await Client.DeleteUserAsync(new DeleteUserRequest { Id = last.Id }, Timeout());
        Assert.Equal(last, deleted);
        await Fails(StatusCode.NotFound, () => Client.GetUserAsync(new GetUserRequest { Id = last.Id }, Timeout()).ResponseAsync);
        await Fails(StatusCode.NotFound, () => Client.DeleteUserAsync(new DeleteUserRequest { Id = last.Id }, Timeout()).ResponseAsync);
        var next = (await Create(("New", "new@example.com"))).Users.Single();
        Assert.True(next.Id > last.Id, $"id {next.Id} reused (deleted {last.Id})");
        // The deleted user's email is free again.
        Assert.Equal(1, (await Create(("Again", last.Email))).Count);
    }

    // ---- ListUsers -----------------------------------------------------------------------------

    [Fact]
    public async Task Pages_are_numbered_from_1_in_id_order()
    {
        var ids = (await Create(Numbered(12))).Users.Select(u => u.Id).ToList();
        Assert.Equal(ids.Take(5), (await List(page: 1, pageSize: 5)).Users.Select(u => u.Id));
        Assert.Equal(ids.Take(5), (await List(page: 0, pageSize: 5)).Users.Select(u => u.Id));
        Assert.Equal(ids.Skip(5).Take(5), (await List(page: 2, pageSize: 5)).Users.Select(u => u.Id));
        Assert.Equal(ids.Skip(10), (await List(page: 3, pageSize: 5)).Users.Select(u => u.Id));
        Assert.Empty((await List(page: 4, pageSize: 5)).Users);
        Assert.Empty((await List(page: int.MaxValue, pageSize: 1000)).Users);
    }

    [Fact]
    public async Task Page_size_defaults_to_50_and_is_bounded_at_1000()
    {
        await Create(Numbered(1001));
        Assert.Equal(50, (await List()).Users.Count);
        Assert.Equal(1000, (await List(pageSize: 5000)).Users.Count);
        var (lastPage, next) = await List(page: 2, pageSize: 1000);
        Assert.Single(lastPage);
        Assert.Null(next);
    }

    [Theory]
    [InlineData(-1, 10, "", "page")]
    [InlineData(1, -1, "", "page_size")]
    [InlineData(0, 10, "not a token", "page_token")]
    [InlineData(0, 10, "AQAAAAAAAAAC0", "page_token")]
    [InlineData(2, 10, "AQAAAAAAAAAC", "page")]
    public async Task Bad_page_requests_are_invalid_argument(int page, int pageSize, string token, string field)
    {
        var ex = await Fails(StatusCode.InvalidArgument, () => List(page, pageSize, token));
        Assert.Contains(field, Fields(ex));
    }

    [Fact]
    public async Task Page_numbers_are_stable_under_inserts()
    {
        await Create(Numbered(10));
        var page1 = (await List(page: 1, pageSize: 4)).Users;
        var page2 = (await List(page: 2, pageSize: 4)).Users;
        await Create(Numbered(7, from: 100));
        Assert.Equal(page1, (await List(page: 1, pageSize: 4)).Users);
        Assert.Equal(page2, (await List(page: 2, pageSize: 4)).Users);
        // New users only ever extend the last pages.
        var page3 = (await List(page: 3, pageSize: 4)).Users;
        Assert.Equal(["user8@example.com", "user9@example.com", "user100@example.com", "user101@example.com"], page3.Select(u => u.Email));
    }

    [Fact]
    public async Task Page_tokens_walk_every_user_once_even_across_inserts_and_deletes()
    {
        var created = (await Create(Numbered(10))).Users;
        var (first, token) = await List(pageSize: 4);
        Assert.NotNull(token);
        // Meanwhile: a user of the page already read and one of the next page are deleted, and
        // new users arrive. The token continues right after the last user sent.
        await Client.DeleteUserAsync(new DeleteUserRequest { Id = created[0].Id }, Timeout());
        await Client.DeleteUserAsync(new DeleteUserRequest { Id = created[5].Id }, Timeout());
        var added = (await Create(Numbered(2, from: 50))).Users;
        var seen = new List<User>(first);
        while (token is not null)
        {
            var (page, next) = await List(pageSize: 4, token: token);
            seen.AddRange(page);
            token = next;
        }
        var expected = created.Take(4).Concat(created.Skip(4).Where(u => u.Id != created[5].Id)).Concat(added).Select(u => u.Id);
        Assert.Equal(expected, seen.Select(u => u.Id));
    }

    [Fact]
    public async Task The_next_page_token_is_set_only_after_a_full_page()
    {
        await Create(Numbered(3));
        Assert.NotNull((await List(pageSize: 3)).NextToken);
        Assert.Null((await List(pageSize: 4)).NextToken);
        var (rest, next) = await List(pageSize: 3, token: (await List(pageSize: 3)).NextToken!);
        Assert.Empty(rest);
        Assert.Null(next);
    }

    [Theory]
    [InlineData("\u202Eevil.exe")] // RIGHT-TO-LEFT OVERRIDE
    [InlineData("ann\u200Bsmith")] // ZERO WIDTH SPACE
    [InlineData("\uFEFFann")] // BYTE ORDER MARK
    [InlineData("ann\u2066x\u2069")] // LEFT-TO-RIGHT ISOLATE ... POP DIRECTIONAL ISOLATE
    public async Task A_name_with_an_invisible_format_character_is_refused(string name)
    {
        var ex = await Assert.ThrowsAsync<RpcException>(() => Create([(name, "format@example.com")]));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Contains("format character", ex.Status.Detail, StringComparison.Ordinal);
        var user = (await Create([("Ann", "ann.format@example.com")])).Users[0];
        ex = await Assert.ThrowsAsync<RpcException>(async () => await Client.UpdateUserAsync(new UpdateUserRequest { Id = user.Id, Name = name }, Timeout()));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
    }

    [Fact]
    public async Task A_name_that_is_not_valid_UTF8_is_refused_and_nothing_is_replaced()
    {
        var user = (await Create([("Ann", "ann.utf8@example.com")])).Users[0];
        byte[] name = [(byte)'A', 0xFF, (byte)'n'];
        // Google.Protobuf refuses invalid UTF-8 (it never replaces it); the server answers
        // INVALID_ARGUMENT (StrictParsing), in a request stream and in a unary call alike.
        var created = RawCalls.Field(1, name).Concat(RawCalls.Field(2, "utf8@example.com"u8.ToArray())).ToArray();
        var ex = await Assert.ThrowsAsync<RpcException>(() => RawCalls.ClientStreamingAsync(Host.Channel, "/user.v1.UserService/CreateUsers", [created], Timeout()));
        Assert.True(ex.StatusCode == StatusCode.InvalidArgument, ex.ToString());
        await Assert.ThrowsAsync<RpcException>(async () => await Client.GetUserByEmailAsync(new GetUserByEmailRequest { Email = "utf8@example.com" }, Timeout()));
        var update = RawCalls.VarintField(1, (ulong)user.Id).Concat(RawCalls.Field(2, name)).ToArray();
        ex = await Assert.ThrowsAsync<RpcException>(() => RawCalls.UnaryAsync(Host.Channel, "/user.v1.UserService/UpdateUser", update, Timeout()));
        Assert.True(ex.StatusCode == StatusCode.InvalidArgument, ex.ToString());
        Assert.Equal("Ann", (await Client.GetUserAsync(new GetUserRequest { Id = user.Id }, Timeout())).Name);
    }

    [Fact]
    public async Task ListUsers_streams_from_the_database_and_stops_when_the_client_cancels()
    {
        // 1000 users of ~260 bytes: far more than HTTP/2 flow control lets the server send ahead.
        await Create(Numbered(1000, nameLength: 200));
        // The listing waits after 50 rows until the client has gone: how much HTTP/2 flow control
        // lets the server send ahead depends on the client's receive window, which
        // SocketsHttpHandler may grow, so without the hold the server could finish first.
        var hold = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Host.Store.Hold = hold;
        var call = Client.ListUsers(new ListUsersRequest { PageSize = 1000 }, Timeout());
        Assert.True(await call.ResponseStream.MoveNext());
        var listing = Assert.Single(Host.Store.Lists);
        // Disposing a call that is still running cancels it (RST_STREAM), as a cancelled
        // CallOptions token does.
        call.Dispose();
        // Let the listing go on only once the server has seen the cancellation (the RST_STREAM
        // travels on its own; releasing it sooner raced it to the end under load).
        await listing.Cancelled.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Host.Store.Hold = null;
        hold.SetResult();
        await listing.Released.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.False(listing.ReachedEnd);
        Assert.True(listing.Pulled < 1000, $"pulled {listing.Pulled} rows of 1000");
        // The service is fine afterwards.
        Assert.Equal(1000, (await List(pageSize: 1000)).Users.Count);
    }

    [Fact]
    public async Task A_reader_following_page_tokens_misses_no_user_created_by_concurrent_writers()
    {
        // Ids are assigned and committed in the same order: a keyset reader that has passed id
        // N never finds a smaller id appearing later.
        var writers = Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
        {
            for (var b = 0; b < 5; b++) await Create(Numbered(5, from: w * 1000 + b * 10));
        })).ToArray();
        var seen = new List<long>();
        var token = "";
        var done = Task.WhenAll(writers);
        while (true)
        {
            var finished = done.IsCompleted;
            while (true)
            {
                var (page, next) = await List(pageSize: 7, token: token);
                seen.AddRange(page.Select(u => u.Id));
                if (page.Count > 0) token = Services.Users.PageToken.Encode(page[^1].Id);
                if (next is null) break;
            }
            if (finished) break;
            await Task.Yield();
        }
        await done;
        Assert.Equal(200, seen.Count);
        Assert.Equal((await ListAll()).Select(u => u.Id), seen);
    }

    // ---- Chat ----------------------------------------------------------------------------------

    [Fact]
    public async Task Chat_delivers_every_message_to_everyone_in_the_room()
    {
        using var ann = Client.Chat(Timeout(new Metadata { { "room", "dev" } }));
        using var bob = Client.Chat(Timeout(new Metadata { { "room", "dev" } }));
        // Bob's first message proves he is in the room before Ann speaks.
        await bob.RequestStream.WriteAsync(new ChatMessage { User = "bob", Message = "here" });
        Assert.True(await bob.ResponseStream.MoveNext());
        await ann.RequestStream.WriteAsync(new ChatMessage { User = "ann", Message = "hi bob" });
        string last;
        do
        {
            Assert.True(await ann.ResponseStream.MoveNext());
            last = ann.ResponseStream.Current.Message;
        } while (last != "hi bob");
        Assert.True(await bob.ResponseStream.MoveNext());
        Assert.Equal(("ann", "hi bob"), (bob.ResponseStream.Current.User, bob.ResponseStream.Current.Message));
        Assert.True(bob.ResponseStream.Current.SentUnixMs > 0);
        await ann.RequestStream.CompleteAsync();
        while (await ann.ResponseStream.MoveNext()) { }
        Assert.Equal(StatusCode.OK, ann.GetStatus().StatusCode);
    }

    [Fact]
    public async Task Chat_messages_need_a_user()
    {
        using var call = Client.Chat(Timeout());
        await call.RequestStream.WriteAsync(new ChatMessage { Message = "who am I" });
        var ex = await Fails(StatusCode.InvalidArgument, async () => await call.ResponseStream.MoveNext());
        Assert.Equal(["user"], Fields(ex));
    }
}

public sealed class SqliteUsersTests() : UsersContractTests(SqliteBackend.Instance);

[Collection(PostgresCollection.Name)]
public sealed class PostgresUsersTests(PostgresServer postgres) : UsersContractTests(postgres);
