using System.CommandLine;
using Conduit.Grpc;
using Conduit.Protos.Accounts.V1;
using Conduit.Services.Accounts;
using Grpc.Core;

namespace Conduit.Commands;

/// <summary>`conduit accounts create|list|update|disable|enable|rotate-token`: the operator's accounts.v1.Accounts client.</summary>
internal static class AccountsCommand
{
    public const string AdminTokenEnvironment = "CONDUIT_ADMIN_TOKEN";

    public static Command Create()
    {
        var command = new Command("accounts", "Manage the accounts (tenants) of accounts.v1.Accounts and their quotas");
        command.Subcommands.Add(CreateAccount());
        command.Subcommands.Add(List());
        command.Subcommands.Add(Update());
        command.Subcommands.Add(SetDisabled("disable", true));
        command.Subcommands.Add(SetDisabled("enable", false));
        command.Subcommands.Add(Rotate());
        return command;
    }

    private static Command CreateAccount()
    {
        var name = new Option<string>("--name") { Description = "The account's name", Required = true };
        var maxKeys = new Option<long>("--max-keys") { Description = "Most keys the account may hold in the cache (default: the server's, 10000)" };
        var maxValueBytes = new Option<long>("--max-value-bytes") { Description = "Largest value the account may store (default: the server's, 1 MiB)" };
        var dryRun = new Option<bool>("--dry-run") { Description = "Validate and create nothing" };
        var command = WithCommon(new Command("create", "Create an account and print its token (the only time it is shown) on stdout") { name, maxKeys, maxValueBytes, dryRun }, out var common);
        command.SetAction((parse, ct) => common.Run(parse, parse.GetValue(dryRun), ct, async (client, options) =>
        {
            var reply = await client.CreateAccountAsync(new CreateAccountReq
            {
                Name = parse.GetValue(name)!,
                MaxCacheKeys = parse.GetValue(maxKeys),
                MaxValueBytes = parse.GetValue(maxValueBytes),
            }, options);
            if (Cli.JsonOutput(parse))
            {
                Cli.PrintJson(reply);
                return;
            }
            Console.Error.WriteLine((parse.GetValue(dryRun) ? "dry run, not created: " : "created ") + Describe(reply.Account));
            if (parse.GetValue(dryRun)) return;
            Console.Error.WriteLine("token (shown once, stored only as a hash):");
            Console.Out.WriteLine(reply.Token);
        }));
        return command;
    }

    private static Command List()
    {
        var command = WithCommon(new Command("list", "List every account"), out var common);
        command.SetAction((parse, ct) => common.Run(parse, false, ct, async (client, options) =>
        {
            var reply = await client.ListAccountsAsync(new ListAccountsReq(), options);
            foreach (var account in reply.Accounts) Print(parse, account);
        }));
        return command;
    }

    private static Command Update()
    {
        var id = new Argument<string>("id");
        var name = new Option<string?>("--name");
        var maxKeys = new Option<long?>("--max-keys");
        var maxValueBytes = new Option<long?>("--max-value-bytes");
        var dryRun = new Option<bool>("--dry-run") { Description = "Validate and change nothing" };
        var command = WithCommon(new Command("update", "Change an account's name or quotas") { id, name, maxKeys, maxValueBytes, dryRun }, out var common);
        command.SetAction((parse, ct) => common.Run(parse, parse.GetValue(dryRun), ct, async (client, options) =>
        {
            var request = new UpdateAccountReq { Id = parse.GetValue(id)! };
            if (parse.GetValue(name) is { } n) request.Name = n;
            if (parse.GetValue(maxKeys) is { } k) request.MaxCacheKeys = k;
            if (parse.GetValue(maxValueBytes) is { } b) request.MaxValueBytes = b;
            Print(parse, await client.UpdateAccountAsync(request, options));
            if (parse.GetValue(dryRun)) Console.Error.WriteLine("dry run: the account would be changed like this; nothing was changed");
        }));
        return command;
    }

    private static Command SetDisabled(string verb, bool disabled)
    {
        var id = new Argument<string>("id");
        var command = WithCommon(new Command(verb, disabled ? "Disable an account: its token stops working" : "Enable a disabled account again") { id }, out var common);
        command.SetAction((parse, ct) => common.Run(parse, false, ct, async (client, options) =>
            Print(parse, await client.UpdateAccountAsync(new UpdateAccountReq { Id = parse.GetValue(id)!, Disabled = disabled }, options))));
        return command;
    }

    private static Command Rotate()
    {
        var id = new Argument<string>("id");
        var command = WithCommon(new Command("rotate-token", "Give an account a new token (printed on stdout); the old one stops working") { id }, out var common);
        command.SetAction((parse, ct) => common.Run(parse, false, ct, async (client, options) =>
        {
            var reply = await client.RotateTokenAsync(new RotateTokenReq { Id = parse.GetValue(id)! }, options);
            if (Cli.JsonOutput(parse))
            {
                Cli.PrintJson(reply);
                return;
            }
            Console.Error.WriteLine("new token for " + Describe(reply.Account) + ":");
            Console.Out.WriteLine(reply.Token);
        }));
        return command;
    }

    private static void Print(ParseResult parse, Account account)
    {
        if (Cli.JsonOutput(parse)) Cli.PrintJson(account);
        else Console.Out.WriteLine(Describe(account));
    }

    private static string Describe(Account a) =>
        $"{a.Id}  {a.Name}  max_cache_keys={a.MaxCacheKeys}  max_value_bytes={a.MaxValueBytes}{(a.Disabled ? "  DISABLED" : "")}";

    private sealed class Common
    {
        public required Option<string> Server { get; init; }
        public required Option<string?> AdminToken { get; init; }

        public async Task<int> Run(ParseResult parse, bool dryRun, CancellationToken cancellationToken, Func<Protos.Accounts.V1.Accounts.AccountsClient, CallOptions, Task> call)
        {
            var headers = new Metadata();
            if (parse.GetValue(AdminToken) is { Length: > 0 } admin) headers.Add(BearerToken.Entry(admin));
            if (dryRun) headers.Add(DryRun.Header);
            using var channel = Cli.Channel(parse, Server);
            await call(new Protos.Accounts.V1.Accounts.AccountsClient(Cli.Invoker(channel, parse)), Cli.CallOptions(parse, cancellationToken, headers));
            return 0;
        }
    }

    private static Command WithCommon(Command command, out Common common)
    {
        common = new Common
        {
            Server = Cli.ServerOption(),
            AdminToken = new Option<string?>("--admin-token")
            {
                Description = $"The server's operator token, when it has one (default: ${AdminTokenEnvironment}; --token works too; without one the server answers loopback callers only)",
                DefaultValueFactory = _ => Environment.GetEnvironmentVariable(AdminTokenEnvironment),
            },
        };
        command.Options.Add(common.Server);
        command.Options.Add(common.AdminToken);
        return command;
    }
}
