using System.Security.Claims;

namespace Conduit.Security.Tests;

public class PolicyTests
{
    private static readonly ClaimsPrincipal Nobody = new(new ClaimsIdentity());

    private static ClaimsPrincipal As(string name, params string[] roles) => Principals.Create(name, "test", roles);

    private static readonly PermissionPolicy Policy = PermissionPolicy.Parse(
    [
        "# the book's root may do anything; nobody may do nothing",
        "role cert:root admin",
        "allow role:admin *",
        "allow cert:alice produce orders*   # a prefix",
        "allow cert:alice consume orders",
        "allow authenticated helloworld.Greeter/SayHello",
        "allow anyone grpc.health.v1.Health/*",
        "",
    ]);

    [Fact]
    public void Roles_come_from_role_lines() => Assert.Equal(["admin"], Policy.RolesOf("cert:root"));

    [Fact]
    public void Subjects_roles_authenticated_and_anyone_match_as_written()
    {
        Assert.True(Policy.Allows(As("cert:root", "admin"), "log.v1.LogAdmin/Truncate", "x"));
        Assert.False(Policy.Allows(As("cert:root"), "log.v1.LogAdmin/Truncate", "x")); // the role claim is what counts
        Assert.True(Policy.Allows(As("cert:nobody"), "helloworld.Greeter/SayHello", null));
        Assert.False(Policy.Allows(Nobody, "helloworld.Greeter/SayHello", null));
        Assert.True(Policy.Allows(Nobody, "grpc.health.v1.Health/Check", null));
        Assert.False(Policy.Allows(As("cert:nobody"), "log.v1.Log/Produce", "orders"));
    }

    [Fact]
    public void Log_actions_name_methods_and_topics()
    {
        var alice = As("cert:alice");
        Assert.True(Policy.Allows(alice, "log.v1.Log/Produce", "orders-eu"));
        Assert.True(Policy.Allows(alice, "log.v1.Log/ProduceStream", "orders"));
        Assert.True(Policy.Allows(alice, "log.v1.Log/ProduceBatch", "orders-eu"));
        Assert.False(Policy.Allows(alice, "log.v1.Log/ProduceBatch", "payments"));
        Assert.True(Policy.Allows(alice, "log.v1.Log/InitProducer", "orders"));
        Assert.False(Policy.Allows(alice, "log.v1.Log/InitProducer", "payments"));
        Assert.False(Policy.Allows(alice, "log.v1.Log/Produce", "payments"));
        Assert.False(Policy.Allows(alice, "log.v1.Log/Produce", ""));
        Assert.True(Policy.Allows(alice, "log.v1.Log/ConsumeStream", "orders"));
        Assert.False(Policy.Allows(alice, "log.v1.Log/Consume", "orders-eu"));
        Assert.False(Policy.Allows(alice, "log.v1.LogAdmin/ListTopics", null));
        // Not every topic: a stream must be checked message by message.
        Assert.False(Policy.Allows(alice, "log.v1.Log/ProduceStream", null));
        Assert.True(Policy.AllowsSomeTopic(alice, "log.v1.Log/ProduceStream"));
    }

    [Fact]
    public void GetByToken_is_open_to_anyone_as_before() =>
        Assert.True(PermissionPolicy.Parse([]).Allows(Nobody, "accounts.v1.Accounts/GetByToken", null));

    [Fact]
    public void ReadSnapshotFile_is_open_to_anyone_and_nothing_else_of_LogAdmin_is()
    {
        var empty = PermissionPolicy.Parse([]);
        Assert.True(empty.Allows(Nobody, "log.v1.LogAdmin/ReadSnapshotFile", null));
        Assert.True(empty.OpenToAnyone("log.v1.LogAdmin/ReadSnapshotFile"));
        Assert.False(empty.Allows(Nobody, "log.v1.LogAdmin/ListTopics", null));
        Assert.False(empty.Allows(Nobody, "log.v1.LogAdmin/AddServer", null));
    }

    [Fact]
    public void GetServers_is_open_to_every_authenticated_caller_and_to_admins_on_LogAdmin()
    {
        var empty = PermissionPolicy.Parse([]);
        Assert.True(empty.Allows(As("account:7"), "log.v1.Log/GetServers", null));
        Assert.False(empty.Allows(Nobody, "log.v1.Log/GetServers", null));
        Assert.False(empty.Allows(As("account:7"), "log.v1.LogAdmin/GetServers", null));
        Assert.True(Policy.Allows(As("cert:root", "admin"), "log.v1.LogAdmin/GetServers", null));
    }

    [Theory]
    [InlineData("deny x *", "unknown rule 'deny'")]
    [InlineData("allow x", "an allow line is")]
    [InlineData("allow x nothing", "what is service/method")]
    [InlineData("allow x produce a*b", "may only end in *")]
    [InlineData("role x", "a role line is")]
    public void A_bad_line_is_named_with_its_number(string line, string why)
    {
        var ex = Assert.Throws<FormatException>(() => PermissionPolicy.Parse(["# fine", line], "policy.txt"));
        Assert.StartsWith("policy.txt:2: ", ex.Message, StringComparison.Ordinal);
        Assert.Contains(why, ex.Message, StringComparison.Ordinal);
    }
}
