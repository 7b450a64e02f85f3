using System.Diagnostics;

namespace Conduit.Cli.Tests;

/// <summary>scripts/run.sh and scripts/conduit build only when a source changed (scripts/lib.sh conduit_stale).</summary>
public sealed class ScriptsTests
{
    private static async Task<string> Stale(string root)
    {
        var info = new ProcessStartInfo("bash", ["-c", $"source '{Paths.RepoRoot}/scripts/lib.sh'; conduit_stale '{root}' && echo stale || echo fresh"])
        {
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        using var process = Process.Start(info)!;
        var output = await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        return output.Trim();
    }

    [Fact]
    public async Task A_build_is_stale_exactly_when_a_source_is_newer_than_it()
    {
        using var root = new TempDir("conduit-stale-");
        var src = Directory.CreateDirectory(Path.Combine(root.Path, "src", "Conduit")).FullName;
        var output = Directory.CreateDirectory(Path.Combine(src, "bin", "Release", "net10.0")).FullName;
        Directory.CreateDirectory(Path.Combine(root.Path, "protos"));
        var old = DateTime.UtcNow.AddMinutes(-10);
        void Write(string path, DateTime at)
        {
            File.WriteAllText(path, "x");
            File.SetLastWriteTimeUtc(path, at);
        }
        Write(Path.Combine(src, "Program.cs"), old);
        Write(Path.Combine(root.Path, "protos", "a.proto"), old);
        Write(Path.Combine(root.Path, "Directory.Packages.props"), old);
        Assert.Equal("stale", await Stale(root.Path)); // never built

        Write(Path.Combine(output, "conduit.dll"), old.AddMinutes(1));
        Assert.Equal("stale", await Stale(root.Path)); // built by something else: no stamp, build once
        Write(Path.Combine(output, ".conduit-build-stamp"), old.AddMinutes(1));
        Assert.Equal("fresh", await Stale(root.Path));

        // Outputs, intermediate files and documents are not sources.
        Write(Path.Combine(root.Path, "README.md"), DateTime.UtcNow);
        Directory.CreateDirectory(Path.Combine(src, "obj"));
        Write(Path.Combine(src, "obj", "Generated.cs"), DateTime.UtcNow);
        Write(Path.Combine(output, "conduit.deps.json"), DateTime.UtcNow);
        Assert.Equal("fresh", await Stale(root.Path));

        foreach (var source in new[] { Path.Combine(src, "Program.cs"), Path.Combine(root.Path, "protos", "a.proto"), Path.Combine(root.Path, "Directory.Packages.props") })
        {
            File.SetLastWriteTimeUtc(source, old.AddMinutes(2));
            Assert.Equal("stale", await Stale(root.Path));
            File.SetLastWriteTimeUtc(source, old);
        }
    }

    [Theory]
    [InlineData("run.sh")]
    [InlineData("conduit")]
    public async Task The_scripts_build_through_conduit_build(string script)
    {
        var text = await File.ReadAllTextAsync(Path.Combine(Paths.RepoRoot, "scripts", script));
        Assert.Contains("conduit_build \"$root\"", text);
        Assert.DoesNotContain("dotnet build", text);
    }
}
