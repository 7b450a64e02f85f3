using System.CommandLine;
using Conduit.Commands;
using Grpc.Core;

// `conduit help [command]` is `conduit [command] --help`.
if (args is ["help", .. var rest]) args = [.. rest, "--help"];

// No response files: a value that starts with '@' is that value, never a file read in its place
// (`conduit hello @/etc/hostname` greets "@/etc/hostname").
var parse = Cli.Build().Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null });

// A bad command line: what was expected, in words, and where the help is (not the whole help).
if (parse.Errors.Count > 0) return Cli.ReportParseErrors(parse);

// Anything that fails ends the command the same way: one "error: ..." line on stderr and a
// nonzero exit code, never a stack trace (commands only catch what they handle differently).
using var clientLog = ClientDiagnostics.Enable(); // CONDUIT_CLIENT_LOG=trace: the client's wire log on stderr
try
{
    return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (RpcException ex)
{
    return Cli.ReportError(ex);
}
catch (Exception ex) when (ex is ArgumentException or IOException or UnauthorizedAccessException or FormatException or OverflowException)
{
    // A bad value the parser could not see (a --server that is no address, a file that is not there).
    Console.Error.WriteLine($"error: {ex.Message}");
    return 2;
}
catch (OperationCanceledException)
{
    // Ctrl-C.
    return 130;
}
catch (Exception ex)
{
    Console.Error.WriteLine($"error: {ex.GetType().Name}: {ex.Message}");
    return 1;
}
