using System.CommandLine;
using Conduit.Grpc;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;

namespace Conduit.Commands;

/// <summary>The `conduit` command line.</summary>
public static partial class Cli
{
    public const string DefaultServer = "http://127.0.0.1:50051";

    /// <summary>--verbose (-v), on every command: one line per call on stderr.</summary>
    public static readonly Option<bool> Verbose = new("--verbose", "-v")
    {
        Description = "Print one line per call on stderr: method, status, time",
        Recursive = true,
    };

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
        root.Subcommands.Add(ClusterCommand.Create());
        root.Subcommands.Add(CacheCommand.Create());
        root.Subcommands.Add(AccountsCommand.Create());
        root.Subcommands.Add(CertsCommand.Create());
        root.Options.Add(Verbose);
        AddClientOptions(root);
        ClientIdentity.AddTo(root);
        return root;
    }

    /// <summary>The --server option every client command has.</summary>
    public static Option<string> ServerOption() => new("--server")
    {
        Description = $"The server to call: http://host:port (h2c), https://host:port (TLS), or conduit:///host:port[,host:port...] (a log cluster: produces to its leader, consumes over its followers) (default: ${ServerEnvironment}, else {DefaultServer})",
        DefaultValueFactory = _ => DefaultServerAddress(),
        Validators = { ValidateServer },
    };

    /// <summary>The channel to --server, with --ca-file, --cert and --key (ClientIdentity).</summary>
    public static GrpcChannel Channel(ParseResult parse, Option<string> server) =>
        ConduitChannel.ForAddress(parse.GetValue(server)!, tls: ClientIdentity.Tls(parse));

    /// <summary>
    /// What a command's clients call through: the channel, --token as a bearer header, and with --verbose the client-side
    /// per-call log (ClientLoggingInterceptor) writing to stderr.
    /// </summary>
    public static CallInvoker Invoker(GrpcChannel channel, ParseResult parse)
    {
        ArgumentNullException.ThrowIfNull(channel);
        ArgumentNullException.ThrowIfNull(parse);
        // A log cluster's follower refuses a produce with NOT_LEADER before appending: repeated at the new leader.
        var invoker = ClientIdentity.Intercept(channel.CreateCallInvoker().Intercept(new Conduit.Grpc.Cluster.NotLeaderRetryInterceptor()), parse);
        return parse.GetValue(Verbose) ? invoker.Intercept(new ClientLoggingInterceptor(StderrLogger.Instance)) : invoker;
    }

    /// <summary>
    /// Prints a failed call the way a person wants to read it, and gives the exit code. Program
    /// does this for every command; commands call it only where they add something after it.
    /// </summary>
    public static int ReportError(RpcException ex)
    {
        // grpc-dotnet keeps why a connection failed in DebugException ("Connection refused"):
        // worth the line, since "Error connecting to subchannel." alone says little.
        var cause = ex.Status.DebugException is { } debug && !ex.Status.Detail.Contains(Innermost(debug).Message, StringComparison.Ordinal) ? $" ({Innermost(debug).Message})" : "";
        Console.Error.WriteLine($"error: {ex.StatusCode}: {ex.Status.Detail}{cause}");
        return 1;
    }

    /// <summary>Every level, one line each, straight to stderr (a short-lived command must not lose a queued line).</summary>
    private sealed class StderrLogger : ILogger
    {
        public static readonly StderrLogger Instance = new();

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Console.Error.WriteLine($"{DateTime.Now:HH:mm:ss.fff} {formatter(state, exception)}");
    }

    private static Exception Innermost(Exception ex)
    {
        while (ex.InnerException is not null) ex = ex.InnerException;
        return ex;
    }
}
