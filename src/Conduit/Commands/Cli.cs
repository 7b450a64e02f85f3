using System.CommandLine;
using Grpc.Core;

namespace Conduit.Commands;

/// <summary>The `conduit` command line.</summary>
public static class Cli
{
    public const string DefaultServer = "http://127.0.0.1:50051";

    public static RootCommand Build()
    {
        var root = new RootCommand("Conduit: gRPC services and the gRPC runtime they run on. `conduit serve` runs every service; the other commands are clients.");
        root.Subcommands.Add(ServeCommand.Create());
        root.Subcommands.Add(HelloCommand.Create());
        root.Subcommands.Add(ChatCommand.Create());
        root.Subcommands.Add(UsersCommand.Create());
        root.Subcommands.Add(InteropCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        root.Subcommands.Add(LogCommand.Create());
        root.Subcommands.Add(CacheCommand.Create());
        root.Subcommands.Add(AccountsCommand.Create());
        return root;
    }

    /// <summary>The --server option every client command has.</summary>
    public static Option<string> ServerOption() => new("--server")
    {
        Description = "The server to call: http://host:port (h2c) or https://host:port (TLS)",
        DefaultValueFactory = _ => DefaultServer,
    };

    /// <summary>
    /// Prints a failed call the way a person wants to read it, and gives the exit code. Program
    /// does this for every command; commands call it only where they add something after it.
    /// </summary>
    public static int ReportError(RpcException ex)
    {
        // grpc-dotnet keeps why a connection failed in DebugException ("Connection refused"):
        // worth the line, since "Error connecting to subchannel." alone says little.
        var cause = ex.Status.DebugException is { } debug ? $" ({Innermost(debug).Message})" : "";
        Console.Error.WriteLine($"error: {ex.StatusCode}: {ex.Status.Detail}{cause}");
        return 1;
    }

    private static Exception Innermost(Exception ex)
    {
        while (ex.InnerException is not null) ex = ex.InnerException;
        return ex;
    }
}
