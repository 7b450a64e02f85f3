using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;

namespace Conduit.Commands;

/// <summary>`conduit log ...`: produce, consume, tail and list topics of log.v1.Log.</summary>
internal static class LogCommand
{
    public static Command Create()
    {
        var command = new Command("log", "The commit log: produce, consume, tail, topics");
        command.Subcommands.Add(Produce());
        command.Subcommands.Add(Consume());
        command.Subcommands.Add(Tail());
        command.Subcommands.Add(Topics());
        command.Subcommands.Add(CreateTopic());
        command.Subcommands.Add(Truncate());
        return command;
    }

    private static Option<string> TopicOption() => new("--topic") { Description = "The topic (default: the default log)", DefaultValueFactory = _ => "" };

    /// <summary>
    /// A record as one line: offset, a tab, the value (UTF-8, with tabs, newlines and backslashes
    /// escaped); with --json, an object with the offset, key, value and timestamp.
    /// </summary>
    private static void Print(ParseResult parse, Record record)
    {
        if (!Cli.JsonOutput(parse))
        {
            Console.WriteLine($"{record.Offset}\t{Cli.Escape(record.Value.ToStringUtf8())}");
            return;
        }
        var json = new JsonObject { ["offset"] = record.Offset };
        if (!record.Key.IsEmpty) Cli.AddBytes(json, "key", record.Key);
        Cli.AddBytes(json, "value", record.Value);
        if (record.TimestampUnixMs != 0) json["timestamp_unix_ms"] = record.TimestampUnixMs;
        Cli.PrintJson(json);
    }

    private static void PrintOffset(ParseResult parse, ulong offset)
    {
        if (Cli.JsonOutput(parse)) Cli.PrintJson(new JsonObject { ["offset"] = offset });
        else Console.WriteLine(offset);
    }

    private static Command Produce()
    {
        var topic = TopicOption();
        var value = new Option<string?>("--value") { Description = "Produce this one value (otherwise every line of stdin is a record)" };
        var key = new Option<string?>("--key") { Description = "The records' key" };
        var dryRun = DryRunOption("Check the records and print the offsets they would get, but append nothing");
        var idempotent = new Option<bool>("--idempotent")
        {
            Description = "Write each record exactly once (the default): resend unacknowledged records after a dropped connection, a server restart or a leader change, and let the server drop the duplicates (docs/client.md)",
        };
        var notIdempotent = new Option<bool>("--no-idempotent")
        {
            Description = "Plain appends, for servers without InitProducer (proglog): a record whose call failed is not resent (a resend could write it twice)",
        };
        var server = Cli.ServerOption();
        var batchBytes = new Option<int>("--batch-bytes") { Description = "Pack stdin's records into ProduceBatch calls of up to this many bytes (0: one record per call; with --no-idempotent, one ProduceStream message per record)", DefaultValueFactory = _ => 1024 * 1024 };
        var lingerMs = new Option<int>("--linger-ms") { Description = "How long a batch waits for more records before it is sent", DefaultValueFactory = _ => 5 };
        var command = new Command("produce", "Append records; prints each record's offset once it is durable") { topic, value, key, dryRun, idempotent, notIdempotent, server, batchBytes, lingerMs };
        command.SetAction(async (parse, cancellationToken) =>
        {
            if (parse.GetValue(idempotent) && (parse.GetValue(dryRun) || parse.GetValue(notIdempotent)))
            {
                Console.Error.WriteLine(parse.GetValue(dryRun)
                    ? "--idempotent and --dry-run do not go together: a dry run appends nothing to retry"
                    : "--idempotent and --no-idempotent do not go together");
                return 2;
            }
            using var channel = Cli.Channel(parse, server);
            var client = new Protos.Log.V1.Log.LogClient(Cli.Invoker(channel, parse));
            var keyBytes = parse.GetValue(key) is { } k ? ByteString.CopyFromUtf8(k) : ByteString.Empty;
            ProduceRequest Request(string text) => new() { Topic = parse.GetValue(topic)!, Record = new Record { Value = ByteString.CopyFromUtf8(text), Key = keyBytes } };
            var plain = parse.GetValue(dryRun) || parse.GetValue(notIdempotent);
            if (plain && parse.GetValue(value) is { } single)
            {
                var reply = await client.ProduceAsync(Request(single), Cli.CallOptions(parse, cancellationToken, DryRunHeaders(parse.GetValue(dryRun))));
                PrintOffset(parse, reply.Offset);
                if (parse.GetValue(dryRun)) Console.Error.WriteLine("dry run: nothing was appended");
                return 0;
            }
            if (!parse.GetValue(dryRun) && (!plain || parse.GetValue(batchBytes) > 0))
            {
                return await ProduceBatchedAsync(parse, client, parse.GetValue(topic)!, parse.GetValue(value), keyBytes, new Services.Log.LogProducerOptions
                {
                    Idempotent = !plain,
                    MaxBatchBytes = Math.Clamp(parse.GetValue(batchBytes), 1, 3 * 1024 * 1024),
                    Linger = TimeSpan.FromMilliseconds(Math.Max(0, parse.GetValue(lingerMs))),
                }, cancellationToken);
            }
            using var call = client.ProduceStream(Cli.CallOptions(parse, cancellationToken, DryRunHeaders(parse.GetValue(dryRun)), waits: true));
            var send = Task.Run(async () =>
            {
                while (await Console.In.ReadLineAsync(cancellationToken) is { } line)
                {
                    await call.RequestStream.WriteAsync(Request(line));
                }
                await call.RequestStream.CompleteAsync();
            }, cancellationToken);
            await foreach (var reply in call.ResponseStream.ReadAllAsync(cancellationToken))
            {
                PrintOffset(parse, reply.Offset);
            }
            await send;
            if (parse.GetValue(dryRun)) Console.Error.WriteLine("dry run: nothing was appended");
            return 0;
        });
        return command;
    }

    /// <summary>
    /// The lines of stdin (or the one value) through a <see cref="Services.Log.LogProducer"/>:
    /// batched by size and linger time, idempotent unless --no-idempotent; offsets print in order
    /// as they are acknowledged.
    /// </summary>
    private static async Task<int> ProduceBatchedAsync(ParseResult parse, Protos.Log.V1.Log.LogClient client, string topic, string? single, ByteString key, Services.Log.LogProducerOptions options, CancellationToken cancellationToken)
    {
        var verbose = parse.GetValue(Cli.Verbose);
        if (verbose) options.OnRetry = message => Console.Error.WriteLine($"retry: {message}");
        // Each call's deadline (--timeout) is counted from when it is made.
        var producer = await Services.Log.LogProducer.CreateAsync(client, topic, options, () => Cli.CallOptions(parse, cancellationToken, null), cancellationToken);
        if (verbose && options.Idempotent) Console.Error.WriteLine($"producer {producer.ProducerId} epoch {producer.Epoch}");
        var acks = System.Threading.Channels.Channel.CreateUnbounded<Task<ulong>>(new() { SingleReader = true, SingleWriter = true });
        var printing = Task.Run(async () =>
        {
            await foreach (var ack in acks.Reader.ReadAllAsync(cancellationToken)) PrintOffset(parse, await ack);
        }, cancellationToken);
        try
        {
            if (single is not null)
            {
                await acks.Writer.WriteAsync(await producer.SendAsync(new Record { Value = ByteString.CopyFromUtf8(single), Key = key }, cancellationToken), cancellationToken);
            }
            else
            {
                while (await Console.In.ReadLineAsync(cancellationToken) is { } line)
                {
                    await acks.Writer.WriteAsync(await producer.SendAsync(new Record { Value = ByteString.CopyFromUtf8(line), Key = key }, cancellationToken), cancellationToken);
                }
            }
        }
        finally
        {
            acks.Writer.TryComplete();
            await producer.DisposeAsync();
        }
        await printing;
        return 0;
    }

    /// <summary>always, interval or never (the wire's UNSPECIFIED is "not given", never a choice).</summary>
    public static Option<Durability?> DurabilityOption(string name, string description) => new(name)
    {
        Description = description,
        HelpName = "always|interval|never",
        CustomParser = result =>
        {
            var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : "";
            switch (text.ToLowerInvariant())
            {
                case "always": return Durability.Always;
                case "interval": return Durability.Interval;
                case "never": return Durability.Never;
                default:
                    result.AddError($"{name} expects always, interval or never, not '{Cli.Shorten(text)}'");
                    return null;
            }
        },
    };

    private static Option<bool> DryRunOption(string description) => new("--dry-run") { Description = description };

    private static Metadata? DryRunHeaders(bool dryRun) => dryRun ? new Metadata { DryRun.Header } : null;

    private static Command Consume()
    {
        var topic = TopicOption();
        var from = new Option<ulong>("--from") { Description = "The first offset to read", DefaultValueFactory = _ => 0 };
        var count = new Option<int?>("--count") { Description = "Read this many records, waiting for new ones if needed (default: up to the current end)" };
        var server = Cli.ServerOption();
        var command = new Command("consume", "Print records (offset TAB value) from an offset on") { topic, from, count, server };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var channel = Cli.Channel(parse, server);
            var client = new Protos.Log.V1.Log.LogClient(Cli.Invoker(channel, parse));
            var name = parse.GetValue(topic)!;
            var offset = parse.GetValue(from);
            if (parse.GetValue(count) is { } wanted)
            {
                if (wanted <= 0) return 0;
                using var stream = client.ConsumeStream(new ConsumeRequest { Topic = name, Offset = offset }, Cli.CallOptions(parse, cancellationToken, waits: true));
                var seen = 0;
                await foreach (var response in stream.ResponseStream.ReadAllAsync(cancellationToken))
                {
                    Print(parse, response.Record);
                    if (++seen == wanted) break;
                }
                return 0;
            }
            var admin = new LogAdmin.LogAdminClient(Cli.Invoker(channel, parse));
            var info = await admin.DescribeTopicAsync(new DescribeTopicRequest { Name = name }, Cli.CallOptions(parse, cancellationToken));
            if (offset < info.FirstOffset || offset > info.NextOffset)
            {
                // Let the server say what is retained.
                await client.ConsumeAsync(new ConsumeRequest { Topic = name, Offset = offset }, Cli.CallOptions(parse, cancellationToken));
            }
            var exitCode = 0;
            for (var o = offset; o < info.NextOffset; o++)
            {
                try
                {
                    var response = await client.ConsumeAsync(new ConsumeRequest { Topic = name, Offset = o }, Cli.CallOptions(parse, cancellationToken));
                    Print(parse, response.Record);
                }
                catch (RpcException ex) when (ex.StatusCode == StatusCode.DataLoss)
                {
                    // Say so and go on: the records after a damaged one are intact.
                    exitCode = Cli.ReportError(ex);
                }
            }
            return exitCode;
        });
        return command;
    }

    private static Command Tail()
    {
        var topic = TopicOption();
        var lines = new Option<ulong>("--lines", "-n") { Description = "How many of the last records to print", DefaultValueFactory = _ => 10 };
        var follow = new Option<bool>("--follow", "-f") { Description = "Keep printing records as they are appended (Ctrl-C stops)" };
        var server = Cli.ServerOption();
        var command = new Command("tail", "Print the last records; with -f, follow the log") { topic, lines, follow, server };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var channel = Cli.Channel(parse, server);
            var client = new Protos.Log.V1.Log.LogClient(Cli.Invoker(channel, parse));
            var admin = new LogAdmin.LogAdminClient(Cli.Invoker(channel, parse));
            var name = parse.GetValue(topic)!;
            try
            {
                var info = await admin.DescribeTopicAsync(new DescribeTopicRequest { Name = name }, Cli.CallOptions(parse, cancellationToken));
                var start = Math.Max(info.FirstOffset, info.NextOffset - Math.Min(info.NextOffset, parse.GetValue(lines)));
                if (!parse.GetValue(follow))
                {
                    for (var o = start; o < info.NextOffset; o++)
                    {
                        var response = await client.ConsumeAsync(new ConsumeRequest { Topic = name, Offset = o }, Cli.CallOptions(parse, cancellationToken));
                        Print(parse, response.Record);
                    }
                    return 0;
                }
                using var stream = client.ConsumeStream(new ConsumeRequest { Topic = name, Offset = start }, Cli.CallOptions(parse, cancellationToken, waits: true));
                await foreach (var response in stream.ResponseStream.ReadAllAsync(cancellationToken))
                {
                    Print(parse, response.Record);
                }
                return 0;
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled && cancellationToken.IsCancellationRequested)
            {
                return 0;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return 0;
            }
        });
        return command;
    }

    private static Command Topics()
    {
        var server = Cli.ServerOption();
        var command = new Command("topics", "List the topics: offsets, size, segments, durability") { server };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var channel = Cli.Channel(parse, server);
            var admin = new LogAdmin.LogAdminClient(Cli.Invoker(channel, parse));
            var list = await admin.ListTopicsAsync(new ListTopicsRequest(), Cli.CallOptions(parse, cancellationToken));
            if (Cli.JsonOutput(parse))
            {
                foreach (var t in list.Topics) Cli.PrintJson(t);
                return 0;
            }
            var table = new StringBuilder();
            table.AppendLine(CultureInfo.InvariantCulture, $"{"TOPIC",-24} {"FIRST",10} {"NEXT",10} {"BYTES",14} {"SEGMENTS",8}  DURABILITY");
            foreach (var t in list.Topics)
            {
                var durability = t.Settings.Durability.ToString().ToLowerInvariant();
                table.AppendLine(CultureInfo.InvariantCulture, $"{(t.Name.Length == 0 ? "(default)" : t.Name),-24} {t.FirstOffset,10} {t.NextOffset,10} {t.Bytes,14} {t.Segments,8}  {durability}");
            }
            Console.Write(table.ToString());
            return 0;
        });
        return command;
    }

    private static Command CreateTopic()
    {
        var name = new Argument<string>("name") { Description = "The topic's name" };
        var durability = DurabilityOption("--durability", "How records are made durable: always (fsync before acknowledging), interval or never (default: the server's --log-durability)");
        var segmentBytes = new Option<ulong?>("--segment-bytes") { Description = "Roll segments at this size" };
        var retentionBytes = new Option<ulong?>("--retention-bytes") { Description = "Keep at most about this many bytes (0: no limit)" };
        var retentionMs = new Option<ulong?>("--retention-ms") { Description = "Remove segments whose records are all older than this (0: no limit)" };
        var dryRun = DryRunOption("Check the name and settings and print the topic, but create nothing");
        var server = Cli.ServerOption();
        var command = new Command("create-topic", "Create a topic with its own durability and retention") { name, durability, segmentBytes, retentionBytes, retentionMs, dryRun, server };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var channel = Cli.Channel(parse, server);
            var admin = new LogAdmin.LogAdminClient(Cli.Invoker(channel, parse));
            var settings = new TopicSettings { Durability = parse.GetValue(durability) ?? Durability.Unspecified };
            if (parse.GetValue(segmentBytes) is { } s) settings.SegmentBytes = s;
            if (parse.GetValue(retentionBytes) is { } rb) settings.RetentionBytes = rb;
            if (parse.GetValue(retentionMs) is { } rm) settings.RetentionMs = rm;
            var info = await admin.CreateTopicAsync(new CreateTopicRequest { Name = parse.GetValue(name)!, Settings = settings },
                Cli.CallOptions(parse, cancellationToken, DryRunHeaders(parse.GetValue(dryRun))));
            if (Cli.JsonOutput(parse))
            {
                Cli.PrintJson(info);
                return 0;
            }
            Console.WriteLine($"{(parse.GetValue(dryRun) ? "would create" : "created")} topic {info.Name}: durability {info.Settings.Durability.ToString().ToLowerInvariant()}, segments of {info.Settings.SegmentBytes} bytes, retention {info.Settings.RetentionBytes} bytes / {info.Settings.RetentionMs} ms");
            return 0;
        });
        return command;
    }

    private static Command Truncate()
    {
        var topic = TopicOption();
        var before = new Option<ulong>("--before") { Description = "Remove whole segments whose records are all below this offset", Required = true };
        var dryRun = DryRunOption("Say what would be removed, remove nothing");
        var server = Cli.ServerOption();
        var command = new Command("truncate", "Remove old retained data (whole segments)") { topic, before, dryRun, server };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var channel = Cli.Channel(parse, server);
            var admin = new LogAdmin.LogAdminClient(Cli.Invoker(channel, parse));
            var headers = DryRunHeaders(parse.GetValue(dryRun));
            var reply = await admin.TruncateAsync(new TruncateRequest { Topic = parse.GetValue(topic)!, BeforeOffset = parse.GetValue(before) },
                Cli.CallOptions(parse, cancellationToken, headers));
            if (Cli.JsonOutput(parse))
            {
                Cli.PrintJson(reply);
                return 0;
            }
            Console.WriteLine($"{(parse.GetValue(dryRun) ? "would remove" : "removed")} {Cli.Count(reply.SegmentsRemoved, "segment")}; first offset {reply.Topic.FirstOffset}, next offset {reply.Topic.NextOffset}");
            return 0;
        });
        return command;
    }
}
