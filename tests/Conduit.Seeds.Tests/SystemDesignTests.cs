using Conduit.Users.Storage;
using Grpc.Core;
using Microsoft.Data.Sqlite;
using V1 = Conduit.Protos.User.V1;

namespace Conduit.Seeds.Tests;

/// <summary>The system-design guide: package user, UserService with int32 ids, from a grpcio client generated from the guide's proto.</summary>
public sealed class SystemDesignTests : IAsyncLifetime
{
    private SeedHost _host = null!;

    public async Task InitializeAsync() => _host = await SeedHost.StartAsync();

    public async Task DisposeAsync() => await _host.DisposeAsync();

    private Task<(int ExitCode, string Output, string Errors)> Guide(params string[] args) => _host.SeedClient("system-design", args);

    [Fact]
    public async Task Create_get_and_list_in_the_same_directory_as_user_v1()
    {
        var created = await Guide("create", "Ann Lee=ann@example.com", "Bob=bob@example.com");
        Assert.True(created.ExitCode == 0, created.Errors);
        Assert.Equal("1\tAnn Lee\tann@example.com\n2\tBob\tbob@example.com\ncount: 2\n", created.Output);
        Assert.Equal("2\tBob\tbob@example.com\n", (await Guide("get", "2")).Output);
        Assert.Equal("2\tBob\tbob@example.com\n", (await Guide("list", "--page", "2", "--page-size", "1")).Output);

        var v1 = new V1.UserService.UserServiceClient(_host.Channel);
        Assert.Equal("Ann Lee", (await v1.GetUserAsync(new V1.GetUserRequest { Id = 1 }, SeedHost.Timeout())).Name);

        var missing = await Guide("get", "3");
        Assert.Equal(1, missing.ExitCode);
        Assert.Equal("NOT_FOUND: No user has the id 3.\n", missing.Errors);
        var bad = await Guide("create", "Cy=not-an-email");
        Assert.StartsWith("INVALID_ARGUMENT: Request 0 is invalid", bad.Errors, StringComparison.Ordinal);
        // The users service's failures reach the seed's clients as they reach user.v1's (the
        // exception mapper answers for both contracts).
        var taken = await Guide("create", "Eve=ANN@example.com");
        Assert.Equal((1, "ALREADY_EXISTS: Request 0: A user with the email 'ANN@example.com' already exists. Nothing was created.\n"), (taken.ExitCode, taken.Errors));
        var dry = await Guide("create", "Dee=dee@example.com", "--dry-run");
        Assert.Equal("0\tDee\tdee@example.com\ncount: 1\n", dry.Output);
        Assert.Equal(2, (await Guide("list")).Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
    }

    [Fact]
    public async Task Chat_shares_the_rooms_of_user_v1()
    {
        var v1 = new V1.UserService.UserServiceClient(_host.Channel);
        using var ours = v1.Chat(SeedHost.Timeout(new Metadata { { "room", "guide" } }));
        await ours.RequestStream.WriteAsync(new V1.ChatMessage { User = "dotnet", Message = "waiting" });
        Assert.True(await ours.ResponseStream.MoveNext());

        var seed = await Guide("chat", "--user", "reader", "--room", "guide", "hi", "bye");
        Assert.True(seed.ExitCode == 0, seed.Errors);
        Assert.Equal("reader: hi\nreader: bye\n", seed.Output);
        Assert.True(await ours.ResponseStream.MoveNext());
        Assert.Equal(("reader", "hi"), (ours.ResponseStream.Current.User, ours.ResponseStream.Current.Message));
    }

    [Fact]
    public async Task Ids_past_int32_are_OUT_OF_RANGE_never_a_wrong_user()
    {
        Assert.Equal(0, (await Guide("create", "Ann=ann@example.com")).ExitCode);
        // A directory that has handed out ids up to int32's last: the next ids do not fit.
        await using (var db = new SqliteConnection($"Data Source={Path.Combine(_host.DataDir, UserStores.DefaultFileName)}"))
        {
            await db.OpenAsync();
            await using var bump = db.CreateCommand();
            bump.CommandText = $"UPDATE sqlite_sequence SET seq = {int.MaxValue - 1} WHERE name = 'users'";
            Assert.Equal(1, await bump.ExecuteNonQueryAsync());
        }

        var created = await Guide("create", "Max=max@example.com", "Past=past@example.com");
        Assert.Equal(1, created.ExitCode);
        Assert.Equal("OUT_OF_RANGE: The 2 users were created, but the ids 2147483648 do not fit the int32 ids of package user; " +
            "read them through user.v1.UserService, whose ids are int64.\n", created.Errors);

        Assert.Equal("2147483647\tMax\tmax@example.com\n", (await Guide("get", "2147483647")).Output);
        var list = await Guide("list");
        Assert.Equal(1, list.ExitCode);
        Assert.Equal("1\tAnn\tann@example.com\n2147483647\tMax\tmax@example.com\n", list.Output);
        Assert.StartsWith("OUT_OF_RANGE: User 2147483648 has an id past int32", list.Errors, StringComparison.Ordinal);

        // The user past int32 exists, under its own id, for user.v1.
        var v1 = new V1.UserService.UserServiceClient(_host.Channel);
        Assert.Equal("Past", (await v1.GetUserAsync(new V1.GetUserRequest { Id = 2147483648L }, SeedHost.Timeout())).Name);
    }
}
