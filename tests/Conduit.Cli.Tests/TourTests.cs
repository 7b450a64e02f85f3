using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Conduit.Cli.Tests;

/// <summary>
/// The README tour is a test: every ```sh block of README.md (but those right after a line
/// <c>&lt;!-- tour: skip --&gt;</c>) runs, in order, in one bash session, against a real
/// `conduit serve` this test starts on a free port with a fresh data folder.
/// <list type="bullet">
/// <item>A line that is not a comment is a command (a trailing <c>\</c> continues it); the <c># ...</c>
/// lines right after it are everything it prints, stdout and stderr together. No such lines: it
/// prints nothing. It must exit nonzero exactly when what it prints starts with "error:".</item>
/// <item>Times (10:42:05, 10:42:05.480), durations in ms, account ids (acc_...) and tokens
/// (cdt_...) are masked on both sides; <c>...</c> in an expected line matches anything.</item>
/// <item>The README's address 127.0.0.1:50051 is the test's server: the commands run with
/// CONDUIT_SERVER set to it (the default of --server for conduit and the Python clients), and a
/// literal 127.0.0.1:50051 in a command is replaced by it.</item>
/// <item>The session runs in a scratch folder that looks like the repository root (tests/ and
/// protos/ link to the real ones; scripts/conduit runs the conduit built with these tests), so
/// files a step writes (people.csv) land there.</item>
/// </list>
/// </summary>
public sealed class TourTests(ITestOutputHelper output)
{
    public const string Marker = "\u001f@@tour-step ";

    public sealed record Step(int Line, string Command, IReadOnlyList<string> Expected);

    /// <summary>The steps of the tour in README.md.</summary>
    public static List<Step> Parse(string readme)
    {
        var steps = new List<Step>();
        var lines = readme.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n');
        var previous = "";
        for (var i = 0; i < lines.Length; i++)
        {
            if (lines[i].Trim() != "```sh")
            {
                if (lines[i].Trim().Length > 0) previous = lines[i].Trim();
                continue;
            }
            var skip = previous == "<!-- tour: skip -->";
            Step? current = null;
            for (i++; i < lines.Length && lines[i].Trim() != "```"; i++)
            {
                if (skip) continue;
                var line = lines[i];
                var trimmed = line.TrimStart();
                if (trimmed.StartsWith('#'))
                {
                    // Output of the command before it (a note before any command is just a note).
                    var text = trimmed.Length > 1 && trimmed[1] == ' ' ? trimmed[2..] : trimmed[1..];
                    ((List<string>?)current?.Expected)?.Add(text.TrimEnd());
                    continue;
                }
                if (trimmed.Length == 0) continue;
                var command = line.TrimEnd();
                var start = i + 1;
                while (command.EndsWith('\\') && i + 1 < lines.Length)
                {
                    command = command[..^1] + "\n" + lines[++i].TrimEnd();
                }
                current = new Step(start, command, new List<string>());
                steps.Add(current);
            }
            previous = "```";
        }
        return steps;
    }

    [Fact]
    public void The_parser_reads_commands_outputs_and_skips()
    {
        var readme = "text\n```sh\nconduit a   # note\n# out 1\n#\n# out 3\nconduit b\n```\n<!-- tour: skip -->\n```sh\nconduit serve\n```\n```sh\n# a note\nprintf 'x' \\\n  'y'\n# xy\n```\n";
        var steps = Parse(readme);
        Assert.Equal(3, steps.Count);
        Assert.Equal((3, "conduit a   # note"), (steps[0].Line, steps[0].Command));
        Assert.Equal(["out 1", "", "out 3"], steps[0].Expected);
        Assert.Equal(("conduit b", 0), (steps[1].Command, steps[1].Expected.Count));
        Assert.Equal(("printf 'x' \n  'y'", "xy"), (steps[2].Command, steps[2].Expected.Single()));
    }

    [Theory]
    [InlineData("10:42:05.480 /helloworld.Greeter/SayHello OK 1.9ms", "09:01:02.003 /helloworld.Greeter/SayHello OK 12.25ms", true)]
    [InlineData("error: FailedPrecondition: account acc_... may store", "error: FailedPrecondition: account acc_9f8e7d may store", true)]
    [InlineData("error: OutOfRange: Offset 9 is past the end; ...", "error: OutOfRange: Offset 9 is past the end; and more", true)]
    [InlineData("cdt_abc", "cdt_Zx9-_q", true)]
    [InlineData("Hello World", "Hello world", false)]
    [InlineData("1\tAnn", "1 Ann", false)]
    public void Lines_match_with_times_ids_and_tokens_masked(string expected, string actual, bool matches) =>
        Assert.Equal(matches, LineMatches(expected, actual));

    private static readonly (Regex Pattern, string Mask)[] Masks =
    [
        (new Regex(@"\b\d\d:\d\d:\d\d(\.\d+)?\b"), "HH:MM:SS"),
        (new Regex(@"\b\d+(\.\d+)?(ms|µs|us)\b"), "N ms"),
        (new Regex(@"\bacc_[A-Za-z0-9_.-]+"), "acc_..."),
        (new Regex(@"\bcdt_[A-Za-z0-9_.-]+"), "cdt_..."),
    ];

    private static string Mask(string line) => Masks.Aggregate(line, (text, mask) => mask.Pattern.Replace(text, mask.Mask));

    public static bool LineMatches(string expected, string actual)
    {
        var pattern = string.Join(".*", Mask(expected).Split("...").Select(Regex.Escape));
        return Regex.IsMatch(Mask(actual), "^" + pattern + "$", RegexOptions.Singleline);
    }

    [Fact]
    public async Task The_README_tour_prints_what_the_README_says()
    {
        var steps = Parse(await File.ReadAllTextAsync(Path.Combine(Paths.RepoRoot, "README.md")));
        Assert.NotEmpty(steps);
        using var data = new TempDir("conduit-tour-data-");
        using var work = new TempDir("conduit-tour-");
        var (server, url) = await ConduitServer.StartAsync(data.Path, "http://127.0.0.1:0");
        await using (server)
        {
            var address = url["http://".Length..];
            var results = await RunAsync(steps, work.Path, url, address);
            var report = new StringBuilder();
            var failed = 0;
            for (var i = 0; i < steps.Count; i++)
            {
                var step = steps[i];
                if (i >= results.Count)
                {
                    report.Append(CultureInfo($"README.md:{step.Line}: not reached (an earlier command did not finish within the time limit)\n  $ {step.Command}\n"));
                    failed++;
                    continue;
                }
                var (exitCode, text) = results[i];
                var problem = Compare(step, exitCode, text);
                if (problem is null) continue;
                failed++;
                report.Append(CultureInfo($"README.md:{step.Line}: {problem}\n  $ {step.Command}\n{Diff(step.Expected, text)}"));
            }
            output.WriteLine($"{steps.Count} tour steps, {failed} differ");
            Assert.True(failed == 0, $"{failed} of {steps.Count} README tour steps differ (- README, + actual; masked: times, ms, acc_..., cdt_...):\n{report}");
        }
    }

    private static string CultureInfo(FormattableString text) => FormattableString.Invariant(text);

    private static string? Compare(Step step, int exitCode, string text)
    {
        var actual = Lines(text);
        var same = actual.Count == step.Expected.Count && actual.Zip(step.Expected).All(p => LineMatches(p.Second, p.First));
        if (!same) return "prints something else";
        if (text.Length > 0 && !text.EndsWith('\n')) return "the output does not end with a newline";
        var error = step.Expected.FirstOrDefault()?.StartsWith("error:", StringComparison.Ordinal) ?? false;
        if (error && exitCode == 0) return "exits 0 but prints an error";
        if (!error && exitCode != 0) return $"exits {exitCode}";
        return null;
    }

    private static List<string> Lines(string text) =>
        text.Length == 0 ? [] : text.TrimEnd('\n').Split('\n').Select(l => l.TrimEnd()).ToList();

    /// <summary>A line diff of README vs actual: "  " same, "- " README only, "+ " actual only.</summary>
    private static string Diff(IReadOnlyList<string> expected, string text)
    {
        var actual = Lines(text);
        // Longest common subsequence under LineMatches: small inputs, plain dynamic programming.
        var lcs = new int[expected.Count + 1, actual.Count + 1];
        for (var i = expected.Count - 1; i >= 0; i--)
        {
            for (var j = actual.Count - 1; j >= 0; j--)
            {
                lcs[i, j] = LineMatches(expected[i], actual[j]) ? lcs[i + 1, j + 1] + 1 : Math.Max(lcs[i + 1, j], lcs[i, j + 1]);
            }
        }
        var sb = new StringBuilder();
        int a = 0, b = 0;
        while (a < expected.Count || b < actual.Count)
        {
            if (a < expected.Count && b < actual.Count && LineMatches(expected[a], actual[b])) { sb.Append("    # ").Append(actual[b]).Append('\n'); a++; b++; }
            else if (b < actual.Count && (a == expected.Count || lcs[a, b + 1] >= lcs[a + 1, b])) sb.Append("  + # ").Append(actual[b++]).Append('\n');
            else sb.Append("  - # ").Append(expected[a++]).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>Runs the steps in one bash session; returns each step's exit code and output, in order, as far as it got.</summary>
    private static async Task<List<(int ExitCode, string Output)>> RunAsync(List<Step> steps, string work, string url, string address)
    {
        Directory.CreateDirectory(Path.Combine(work, "scripts"));
        var wrapper = Path.Combine(work, "scripts", "conduit");
        await File.WriteAllTextAsync(wrapper, $"#!/usr/bin/env bash\nexec dotnet '{Paths.ConduitDll}' \"$@\"\n");
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(wrapper, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        foreach (var linked in new[] { "tests", "protos" }) Directory.CreateSymbolicLink(Path.Combine(work, linked), Path.Combine(Paths.RepoRoot, linked));
        // The tools scripts/test.sh installs with npm (buf), where the README says they are.
        Directory.CreateSymbolicLink(Path.Combine(work, ".cache"), Path.Combine(Paths.RepoRoot, ".cache"));

        var script = new StringBuilder("exec 2>&1 </dev/null\n");
        foreach (var step in steps)
        {
            script.Append(step.Command.Replace("127.0.0.1:50051", address, StringComparison.Ordinal)).Append('\n');
            script.Append(CultureInfo($"printf '{Marker.Replace("\u001f", "\\037", StringComparison.Ordinal)}%d\\n' $?\n"));
        }
        var scriptPath = Path.Combine(work, ".tour.sh");
        await File.WriteAllTextAsync(scriptPath, script.ToString());

        var info = new ProcessStartInfo("bash", [scriptPath])
        {
            WorkingDirectory = work,
            RedirectStandardOutput = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        info.Environment["CONDUIT_SERVER"] = url;
        info.Environment["DOTNET_NOLOGO"] = "1";
        info.Environment["PWD"] = work;
        info.Environment["PATH"] = Path.Combine(work, "scripts") + ":" + Environment.GetEnvironmentVariable("PATH");
        info.Environment.Remove("CONDUIT_TOKEN");
        info.Environment.Remove("CONDUIT_ADMIN_TOKEN");
        using var bash = Process.Start(info)!;
        bash.StandardInput.Close();
        var all = bash.StandardOutput.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(180));
        try
        {
            await bash.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            bash.Kill(entireProcessTree: true);
        }
        var text = await all;
        var results = new List<(int, string)>();
        var parts = text.Split(Marker);
        for (var i = 0; i + 1 < parts.Length; i++)
        {
            var output = i == 0 ? parts[0] : parts[i][(parts[i].IndexOf('\n', StringComparison.Ordinal) + 1)..];
            var next = parts[i + 1];
            results.Add((int.Parse(next[..next.IndexOf('\n', StringComparison.Ordinal)], System.Globalization.CultureInfo.InvariantCulture), output));
        }
        return results;
    }
}
