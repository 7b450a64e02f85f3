using System.CommandLine;
using System.Text.Json.Nodes;
using Conduit.Grpc;
using Conduit.Protos.Cache.V1;
using Conduit.Services.Accounts;
using Google.Protobuf;
using Grpc.Core;

namespace Conduit.Commands;

/// <summary>`conduit cache set|get|del|dump`: the cache.v1.Cache client.</summary>
internal static class CacheCommand
{
    public const string TokenEnvironment = ClientIdentity.TokenEnvironment;

    public static Command Create()
    {
        var command = new Command("cache", "Store, get, delete and dump keys of your account in cache.v1.Cache");
        command.Subcommands.Add(Set());
        command.Subcommands.Add(Get());
        command.Subcommands.Add(Del());
        command.Subcommands.Add(Dump());
        return command;
    }

    private static Command Set()
    {
        var key = new Argument<string>("key");
        var value = new Argument<string>("value") { Description = "The value (UTF-8); '-' reads it from stdin" };
        var ttl = new Option<string?>("--ttl") { Description = "Time to live: 250ms, 10s, 5m, 2h, 1d (default: no expiry)" };
        var dryRun = new Option<bool>("--dry-run") { Description = "Validate everything (token, quotas, sizes) and change nothing" };
        var command = WithCommon(new Command("set", "Store a value under a key") { key, value, ttl, dryRun }, out var common);
        command.SetAction(async (parse, cancellationToken) =>
        {
            var text = parse.GetValue(value)!;
            var bytes = text == "-" ? await ReadStdinAsync(cancellationToken) : ByteString.CopyFromUtf8(text);
            var request = new StoreReq { Key = parse.GetValue(key)!, Val = bytes };
            if (parse.GetValue(ttl) is { } t)
            {
                if (!Cli.TryParseDuration(t, out var span))
                {
                    Console.Error.WriteLine($"error: --ttl expects a duration like 250ms, 10s, 5m, 2h or 1d (at most 10000d), not '{Cli.Shorten(t)}'");
                    return 2;
                }
                request.Ttl = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(span);
            }
            return await common.Run(parse, parse.GetValue(dryRun), cancellationToken, async (client, options) =>
            {
                await client.StoreAsync(request, options);
                if (parse.GetValue(dryRun)) Console.Error.WriteLine("dry run: would be stored");
            });
        });
        return command;
    }

    private static Command Get()
    {
        var key = new Argument<string>("key");
        var command = WithCommon(new Command("get", "Print the value of a key") { key }, out var common);
        command.SetAction((parse, cancellationToken) => common.Run(parse, false, cancellationToken, async (client, options) =>
        {
            var reply = await client.GetAsync(new GetReq { Key = parse.GetValue(key)! }, options);
            if (Cli.JsonOutput(parse))
            {
                var json = new JsonObject { ["key"] = parse.GetValue(key) };
                Cli.AddBytes(json, "value", reply.Val);
                Cli.PrintJson(json);
                return;
            }
            // The value's bytes as they are, then a newline (like any line of output; a script
            // that needs the exact bytes strips it, or takes --json).
            Console.Out.Flush();
            using var stdout = Console.OpenStandardOutput();
            reply.Val.WriteTo(stdout);
            stdout.Write("\n"u8);
        }));
        return command;
    }

    private static Command Del()
    {
        var key = new Argument<string>("key");
        var dryRun = new Option<bool>("--dry-run") { Description = "Check the key exists and change nothing" };
        var command = WithCommon(new Command("del", "Delete a key") { key, dryRun }, out var common);
        command.SetAction((parse, cancellationToken) => common.Run(parse, parse.GetValue(dryRun), cancellationToken, async (client, options) =>
        {
            await client.DeleteAsync(new DeleteReq { Key = parse.GetValue(key)! }, options);
            if (parse.GetValue(dryRun)) Console.Error.WriteLine("dry run: would be deleted");
        }));
        return command;
    }

    private static Command Dump()
    {
        var command = WithCommon(new Command("dump", "Print every key of your account: one line per key, key TAB value (tabs, newlines and backslashes escaped as \\t \\n \\\\)") { }, out var common);
        command.SetAction((parse, cancellationToken) => common.Run(parse, false, cancellationToken, async (client, options) =>
        {
            using var call = client.Dump(new DumpReq(), options);
            using var progress = new Progress("dump");
            var count = 0;
            while (await call.ResponseStream.MoveNext(cancellationToken))
            {
                var item = call.ResponseStream.Current;
                if (Cli.JsonOutput(parse))
                {
                    var json = new JsonObject { ["key"] = item.Key };
                    Cli.AddBytes(json, "value", item.Val);
                    Cli.PrintJson(json);
                }
                else
                {
                    Console.Out.WriteLine($"{Cli.Escape(item.Key)}\t{Cli.Escape(item.Val.ToStringUtf8())}");
                }
                progress.Report(++count, "key");
            }
            progress.Done();
            Console.Error.WriteLine(Cli.Count(count, "key"));
        }));
        return command;
    }

    /// <summary>--server, --token and --timeout, and running one call with them.</summary>
    private sealed class Common
    {
        public required Option<string> Server { get; init; }

        public async Task<int> Run(ParseResult parse, bool dryRun, CancellationToken cancellationToken, Func<Protos.Cache.V1.Cache.CacheClient, CallOptions, Task> call)
        {
            var token = parse.GetValue(ClientIdentity.Token);
            if (string.IsNullOrEmpty(token))
            {
                Console.Error.WriteLine($"error: give --token or set {TokenEnvironment} (`conduit accounts create` prints one)");
                return 2;
            }
            var headers = new Metadata { BearerToken.Entry(token) };
            if (dryRun) headers.Add(DryRun.Header);
            using var channel = Cli.Channel(parse, Server);
            await call(new Protos.Cache.V1.Cache.CacheClient(Cli.Invoker(channel, parse)), Cli.CallOptions(parse, cancellationToken, headers));
            return 0;
        }
    }

    private static Command WithCommon(Command command, out Common common)
    {
        common = new Common
        {
            Server = Cli.ServerOption(),
        };
        command.Options.Add(common.Server);
        return command;
    }

    private static async Task<ByteString> ReadStdinAsync(CancellationToken cancellationToken)
    {
        using var stdin = Console.OpenStandardInput();
        using var buffer = new MemoryStream();
        await stdin.CopyToAsync(buffer, cancellationToken);
        return ByteString.CopyFrom(buffer.GetBuffer(), 0, (int)buffer.Length);
    }
}
