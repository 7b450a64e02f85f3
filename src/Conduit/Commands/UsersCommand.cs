using System.CommandLine;
using System.Globalization;
using Conduit.Grpc;
using Conduit.Protos.User.V1;
using Grpc.Core;

namespace Conduit.Commands;

/// <summary>`conduit users ...`: a client of user.v1.UserService. Users print as "id TAB name TAB email".</summary>
internal static class UsersCommand
{
    public static Command Create()
    {
        var command = new Command("users", "The user directory (user.v1.UserService): get, list, create, update, delete, find");
        command.Subcommands.Add(Get());
        command.Subcommands.Add(List());
        command.Subcommands.Add(CreateUsers());
        command.Subcommands.Add(Update());
        command.Subcommands.Add(Delete());
        command.Subcommands.Add(Find());
        return command;
    }

    private static Option<bool> DryRunOption() => new("--dry-run") { Description = "Check everything and print the result, but change nothing" };

    private static CallOptions Options(ParseResult parse, CancellationToken cancellationToken, bool dryRun = false) =>
        Cli.CallOptions(parse, cancellationToken, dryRun ? new Metadata { DryRun.Header } : null);

    private static Command Get()
    {
        var id = new Argument<long>("id") { Description = "The user's id" };
        var server = Cli.ServerOption();
        var command = new Command("get", "Print one user") { id, server };
        command.SetAction((parse, cancellationToken) => Call(parse, server, async client =>
        {
            Print(parse, await client.GetUserAsync(new GetUserRequest { Id = parse.GetValue(id) }, Options(parse, cancellationToken)));
            return 0;
        }));
        return command;
    }

    private static Command Find()
    {
        var email = new Argument<string>("email") { Description = "The email (compared case-insensitively)" };
        var server = Cli.ServerOption();
        var command = new Command("find", "Print the user with this email") { email, server };
        command.SetAction((parse, cancellationToken) => Call(parse, server, async client =>
        {
            Print(parse, await client.GetUserByEmailAsync(new GetUserByEmailRequest { Email = parse.GetValue(email) }, Options(parse, cancellationToken)));
            return 0;
        }));
        return command;
    }

    private static Command List()
    {
        var page = new Option<int>("--page") { Description = "Page number, from 1 (default 1)" };
        var pageSize = new Option<int>("--page-size") { Description = "Users per page (default 50, at most 1000)" };
        var pageToken = new Option<string?>("--page-token") { Description = "Continue after the page that printed this token" };
        var all = new Option<bool>("--all") { Description = "Every user, page after page (by page token)" };
        var server = Cli.ServerOption();
        var command = new Command("list", "Print a page of users in id order (the next page token goes to stderr)") { page, pageSize, pageToken, all, server };
        command.SetAction((parse, cancellationToken) => Call(parse, server, async client =>
        {
            var request = new ListUsersRequest { Page = parse.GetValue(page), PageSize = parse.GetValue(pageSize), PageToken = parse.GetValue(pageToken) ?? "" };
            if (parse.GetValue(all) && request.PageSize == 0) request.PageSize = 1000;
            while (true)
            {
                using var call = client.ListUsers(request, Options(parse, cancellationToken));
                await foreach (var user in call.ResponseStream.ReadAllAsync(cancellationToken)) Print(parse, user);
                var next = call.GetTrailers().GetValue("next-page-token");
                if (next is null) return 0;
                if (!parse.GetValue(all))
                {
                    Console.Error.WriteLine($"next page: --page-token {next}");
                    return 0;
                }
                request = new ListUsersRequest { PageSize = request.PageSize, PageToken = next };
            }
        }));
        return command;
    }

    private static Command CreateUsers()
    {
        var name = new Option<string?>("--name") { Description = "The new user's name" };
        var email = new Option<string?>("--email") { Description = "The new user's email" };
        var csv = new Option<FileInfo?>("--from-csv") { Description = "Create every user of a CSV file (columns name,email; a header line is optional), all or none" };
        var dryRun = DryRunOption();
        var server = Cli.ServerOption();
        var command = new Command("create", "Create users through the CreateUsers stream: one (--name, --email) or a CSV file, all or none") { name, email, csv, dryRun, server };
        command.Validators.Add(result =>
        {
            var single = result.GetValue(name) is not null || result.GetValue(email) is not null;
            if (result.GetValue(csv) is not null == single) result.AddError("give either --name and --email, or --from-csv FILE");
            else if (single && (result.GetValue(name) is null || result.GetValue(email) is null)) result.AddError("give both --name and --email");
        });
        command.SetAction((parse, cancellationToken) => Call(parse, server, async client =>
        {
            var file = parse.GetValue(csv);
            var lines = new List<int>(); // request index -> CSV line, to say where a rejected user is
            using var call = client.CreateUsers(Options(parse, cancellationToken, parse.GetValue(dryRun)));
            try
            {
                if (file is null)
                {
                    await call.RequestStream.WriteAsync(new CreateUserRequest { Name = parse.GetValue(name)!, Email = parse.GetValue(email)! });
                }
                else
                {
                    using var reader = file.OpenText();
                    int nameColumn = 0, emailColumn = 1;
                    var first = true;
                    using var progress = new Progress($"{file.Name}");
                    await foreach (var (line, fields) in CsvRecords.ReadAsync(reader))
                    {
                        progress.Report(lines.Count, "user", " sent");
                        if (first)
                        {
                            first = false;
                            var header = fields.Select(f => f.Trim().ToLowerInvariant()).ToList();
                            if (header.Contains("name") && header.Contains("email"))
                            {
                                (nameColumn, emailColumn) = (header.IndexOf("name"), header.IndexOf("email"));
                                continue;
                            }
                        }
                        if (fields.Length <= Math.Max(nameColumn, emailColumn))
                        {
                            Console.Error.WriteLine($"error: {file.Name} line {line}: expected the columns name,email; nothing was created");
                            return 1; // disposing the call cancels it: the server creates nothing
                        }
                        lines.Add(line);
                        await call.RequestStream.WriteAsync(new CreateUserRequest { Name = fields[nameColumn], Email = fields[emailColumn] });
                    }
                }
                await call.RequestStream.CompleteAsync();
            }
            catch (Exception ex) when (ex is RpcException or InvalidOperationException)
            {
                // The server ended the call early (a bad request): its status comes with the response.
            }
            catch (FormatException ex)
            {
                Console.Error.WriteLine($"error: {file!.Name} {ex.Message}; nothing was created");
                return 1;
            }
            try
            {
                var response = await call.ResponseAsync;
                foreach (var user in response.Users) Print(parse, user);
                var users = Cli.Count(response.Count, "user");
                Console.Error.WriteLine(parse.GetValue(dryRun) ? $"dry run: {users} would be created" : $"created {users}");
                return 0;
            }
            catch (RpcException ex) when (file is not null && ex.GetDetail<Google.Rpc.ErrorInfo>() is { } info
                && info.Metadata.TryGetValue("index", out var index) && int.TryParse(index, CultureInfo.InvariantCulture, out var i) && i < lines.Count)
            {
                var code = Cli.ReportError(ex);
                Console.Error.WriteLine($"  (request {i} is {file.Name} line {lines[i]})");
                return code;
            }
        }));
        return command;
    }

    private static Command Update()
    {
        var id = new Argument<long>("id") { Description = "The user's id" };
        var name = new Option<string?>("--name") { Description = "The new name" };
        var email = new Option<string?>("--email") { Description = "The new email" };
        var dryRun = DryRunOption();
        var server = Cli.ServerOption();
        var command = new Command("update", "Change a user's name and/or email") { id, name, email, dryRun, server };
        command.SetAction((parse, cancellationToken) => Call(parse, server, async client =>
        {
            var request = new UpdateUserRequest { Id = parse.GetValue(id), Name = parse.GetValue(name) ?? "", Email = parse.GetValue(email) ?? "" };
            Print(parse, await client.UpdateUserAsync(request, Options(parse, cancellationToken, parse.GetValue(dryRun))));
            if (parse.GetValue(dryRun)) Console.Error.WriteLine("dry run: the user would be changed like this; nothing was changed");
            return 0;
        }));
        return command;
    }

    private static Command Delete()
    {
        var id = new Argument<long>("id") { Description = "The user's id" };
        var dryRun = DryRunOption();
        var server = Cli.ServerOption();
        var command = new Command("delete", "Delete a user (prints it as it was)") { id, dryRun, server };
        command.SetAction((parse, cancellationToken) => Call(parse, server, async client =>
        {
            Print(parse, await client.DeleteUserAsync(new DeleteUserRequest { Id = parse.GetValue(id) }, Options(parse, cancellationToken, parse.GetValue(dryRun))));
            if (parse.GetValue(dryRun)) Console.Error.WriteLine("dry run: the user would be deleted; nothing was changed");
            return 0;
        }));
        return command;
    }

    private static async Task<int> Call(ParseResult parse, Option<string> server, Func<UserService.UserServiceClient, Task<int>> action)
    {
        using var channel = Cli.Channel(parse, server);
        return await action(new UserService.UserServiceClient(Cli.Invoker(channel, parse)));
    }

    private static void Print(ParseResult parse, User user)
    {
        if (Cli.JsonOutput(parse)) Cli.PrintJson(user);
        else Console.WriteLine($"{user.Id}\t{Cli.Escape(user.Name)}\t{Cli.Escape(user.Email)}");
    }
}
