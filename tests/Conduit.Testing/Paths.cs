namespace Conduit.Testing;

/// <summary>Where things are: the repository, the Python peers, the built conduit executable.</summary>
public static class Paths
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string Python => "/usr/bin/python3";

    public static string PythonScript(string name) => Path.Combine(RepoRoot, "tests", "python", name);

    /// <summary>conduit.dll of the same configuration as this test assembly.</summary>
    public static string ConduitDll
    {
        get
        {
            var configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name; // bin/<Configuration>/net10.0
            return Path.Combine(RepoRoot, "src", "Conduit", "bin", configuration, "net10.0", "conduit.dll");
        }
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (Directory.Exists(Path.Combine(dir.FullName, "protos")) && Directory.Exists(Path.Combine(dir.FullName, "tests", "python"))) return dir.FullName;
        }
        throw new InvalidOperationException("Cannot find the repository root above " + AppContext.BaseDirectory);
    }
}
