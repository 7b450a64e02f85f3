using System.CommandLine;
using Conduit.Commands;
using Conduit.Grpc;
using Grpc.Core;

// A call that fails ends any command the same way: one "error: Code: message" line on stderr
// and exit code 1 (commands only catch the statuses they handle differently).
using var clientLog = ClientDiagnostics.Enable(); // CONDUIT_CLIENT_LOG=trace: the client's wire log on stderr
try
{
    return await Cli.Build().Parse(args).InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (RpcException ex)
{
    return Cli.ReportError(ex);
}
catch (ArgumentException ex)
{
    // A bad value the parser could not see (say, a --server that is no address): one line, no trace.
    Console.Error.WriteLine($"error: {ex.Message}");
    return 2;
}
catch (Exception ex) when (ex is not OperationCanceledException)
{
    // What System.CommandLine's own handler did for anything else.
    Console.Error.WriteLine($"Unhandled exception: {ex}");
    return 1;
}
