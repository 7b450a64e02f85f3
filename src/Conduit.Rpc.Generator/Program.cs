using Google.Protobuf;
using Google.Protobuf.Compiler;
using Conduit.Rpc.Generator;

// protoc plugin protocol: a CodeGeneratorRequest on stdin, a CodeGeneratorResponse on stdout.
var request = CodeGeneratorRequest.Parser.ParseFrom(Console.OpenStandardInput());
var response = new CodeGeneratorResponse
{
    SupportedFeatures = (ulong)CodeGeneratorResponse.Types.Feature.Proto3Optional,
};
try
{
    var names = new CSharpNames(request.ProtoFile);
    foreach (var fileName in request.FileToGenerate)
    {
        var file = request.ProtoFile.Single(f => f.Name == fileName);
        if (file.Service.Count == 0) continue;
        response.File.Add(new CodeGeneratorResponse.Types.File
        {
            Name = CSharpNames.OutputFileName(file),
            Content = new ServiceWriter(file, names).Write(),
        });
    }
}
catch (Exception ex) when (ex is InvalidOperationException or ArgumentException)
{
    response.Error = ex.Message;
}
using var stdout = Console.OpenStandardOutput();
response.WriteTo(stdout);
