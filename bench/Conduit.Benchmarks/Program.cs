using BenchmarkDotNet.Running;

// dotnet run -c Release --project bench/Conduit.Benchmarks -- --filter '*'
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
