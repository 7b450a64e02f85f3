using Conduit.Commands;

return await Cli.Build().Parse(args).InvokeAsync();
