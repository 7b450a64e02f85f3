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
        root.Options.Add(ServiceConfigFile);
        root.Options.Add(LoadBalancing);
        AddClientOptions(root);
        ClientIdentity.AddTo(root);
        return root;
    }

    /// <summary>The --server option every client command has.</summary>
    public static Option<string> ServerOption() => new("--server")
    {
        Description = $"The server(s) to call: http://host:port (h2c), https://host:port (TLS), a comma list of those, static:///host:port,host:port, dns:///name:port, or conduit:///host:port[,host:port...] (a log cluster: produces to its leader, consumes over its followers) (default: ${ServerEnvironment}, else {DefaultServer})",
        DefaultValueFactory = _ => DefaultServerAddress(),
        Validators = { ValidateServer },
    };

    /// <summary>--service-config FILE, on every command: balancing, timeouts, retries and hedging per method.</summary>
    public static readonly Option<string?> ServiceConfigFile = new("--service-config")
    {
        Description = "A gRPC service config (JSON, as in grpc's doc/service_config.md): loadBalancingConfig, methodConfig (timeout, waitForReady, retryPolicy, hedgingPolicy), retryThrottling, healthCheckConfig (default: Conduit's, which retries reads on UNAVAILABLE; docs/client.md)",
        HelpName = "file",
        Recursive = true,
    };

    /// <summary>--lb, on every command: the balancing policy, a shorthand for the service config's loadBalancingConfig.</summary>
    public static readonly Option<string?> LoadBalancing = new("--lb")
    {
        Description = "How calls spread over the servers of --server: pick_first (grpc's default: one server, the next when it fails) or round_robin (every healthy server in turn)",
        HelpName = "policy",
        Recursive = true,
        Validators =
        {
            result =>
            {
                var value = result.Tokens.Count > 0 ? result.Tokens[0].Value : "";
                if (value is not ("pick_first" or "round_robin")) result.AddError($"--lb expects pick_first or round_robin, not '{Shorten(value)}'");
            },
        },
    };

    /// <summary>The channel to --server, with --ca-file, --cert and --key (ClientIdentity), --service-config and --lb.</summary>
    public static GrpcChannel Channel(ParseResult parse, Option<string> server)
    {
        ArgumentNullException.ThrowIfNull(parse);
        var config = ServiceConfig(parse);
        var verbose = parse.GetValue(Verbose) && ConduitChannel.DefaultLoggerFactory is null;
        var target = parse.GetValue(server)!;
        var token = parse.GetValue(ClientIdentity.Token);
        return ConduitChannel.ForAddress(target, o =>
        {
            // --verbose: a line for each retry and hedged attempt (grpc-dotnet's own log of them).
            if (verbose) o.LoggerFactory = AttemptLog.Factory;
            // The channel's own calls carry --token too (a policy wants a principal): round_robin's
            // health Watch streams, and a conduit:/// resolver's GetServers.
            if (token is { Length: > 0 }) ConduitChannel.UseHeaders(o, new Metadata { Services.Accounts.BearerToken.Entry(token) });
        }, ClientIdentity.Tls(parse), config);
    }

    /// <summary>--service-config's file (else Conduit's default), with --lb's policy first.</summary>
    public static ConduitServiceConfig ServiceConfig(ParseResult parse)
    {
        ArgumentNullException.ThrowIfNull(parse);
        ConduitServiceConfig config;
        if (parse.GetValue(ServiceConfigFile) is { } file)
        {
            string json;
            try
            {
                json = File.ReadAllText(file);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw new ArgumentException($"--service-config: {ex.Message}", ex);
            }
            try
            {
                config = ConduitServiceConfig.Parse(json);
            }
            catch (ArgumentException ex)
            {
                throw new ArgumentException($"--service-config {Shorten(file)}: {ex.Message}", ex);
            }
        }
        else
        {
            config = ConduitServiceConfig.Default();
        }
        if (parse.GetValue(LoadBalancing) is { } policy)
        {
            config.Config.LoadBalancingConfigs.Insert(0, policy == "round_robin" ? new global::Grpc.Net.Client.Configuration.RoundRobinConfig() : new global::Grpc.Net.Client.Configuration.PickFirstConfig());
        }
        return config;
    }

    /// <summary>
    /// What a command's clients call through: the channel, --token as a bearer header, and with --verbose the client-side
    /// per-call log (ClientLoggingInterceptor) writing to stderr.
    /// </summary>
    public static CallInvoker Invoker(GrpcChannel channel, ParseResult parse)
    {
        ArgumentNullException.ThrowIfNull(channel);
        ArgumentNullException.ThrowIfNull(parse);
        // A log cluster's follower refuses a produce with NOT_LEADER before appending: repeated at the new leader.
        var invoker = ClientIdentity.Intercept(ConduitChannel.CreateCallInvoker(channel).Intercept(new Conduit.Grpc.Cluster.NotLeaderRetryInterceptor()), parse);
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
        if (ex.GetDetail<Google.Rpc.ErrorInfo>() is { Domain: "log.conduit.dev", Reason: "OUTCOME_UNKNOWN" or "LEADERSHIP_LOST" })
        {
            // The server proposed the change and cannot say whether it will be applied: not a refusal.
            Console.Error.WriteLine("note: the outcome is unknown: the change may or may not have been applied. Look (`conduit log topics`, `conduit log consume`) before repeating it; an idempotent producer's retry is always safe.");
        }
        return 1;
    }

    /// <summary>
    /// grpc-dotnet's log of retries and hedging (Grpc.Net.Client.Internal.RetryCall and
    /// HedgingCall), reduced to one stderr line per attempt after the first, per evaluated failure
    /// and per server pushback: what --verbose shows of them.
    /// </summary>
    private sealed class AttemptLog : ILoggerProvider, ILogger
    {
        public static readonly ILoggerFactory Factory = LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Debug).AddProvider(new AttemptLog()));

        private static readonly HashSet<int> Events = [1, 2, 12]; // RetryEvaluated, RetryPushbackReceived, StartingAttempt

        public ILogger CreateLogger(string categoryName) =>
            categoryName is "Grpc.Net.Client.Internal.RetryCall" or "Grpc.Net.Client.Internal.HedgingCall" ? this : Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

        public void Dispose() { }

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Debug;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!Events.Contains(eventId.Id)) return;
            // "Starting attempt 1." is every call's: only the attempts that are retries or hedges.
            if (eventId.Id == 12 && state is IReadOnlyList<KeyValuePair<string, object?>> fields
                && fields.FirstOrDefault(f => f.Key == "AttemptCount").Value is int attempt && attempt <= 1) return;
            Console.Error.WriteLine($"{DateTime.Now:HH:mm:ss.fff} retry: {formatter(state, exception)}");
        }
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
