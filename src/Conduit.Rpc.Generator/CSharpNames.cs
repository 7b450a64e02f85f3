using System.Text;
using Google.Protobuf.Reflection;

namespace Conduit.Rpc.Generator;

/// <summary>
/// Maps proto names to the C# names protoc's C# generator gives them, so the generated service
/// code refers to the message classes Grpc.Tools produced.
/// </summary>
internal sealed class CSharpNames
{
    private readonly Dictionary<string, string> _typeNames = new(StringComparer.Ordinal);

    public CSharpNames(IEnumerable<FileDescriptorProto> files)
    {
        foreach (var file in files)
        {
            var ns = Namespace(file);
            var prefix = string.IsNullOrEmpty(file.Package) ? "." : "." + file.Package + ".";
            foreach (var message in file.MessageType)
            {
                AddMessage(message, prefix, string.IsNullOrEmpty(ns) ? "global::" : "global::" + ns + ".");
            }
        }
    }

    /// <summary>The C# type of a proto type name such as ".helloworld.HelloRequest".</summary>
    public string TypeName(string protoTypeName) =>
        _typeNames.TryGetValue(protoTypeName, out var name) ? name : throw new InvalidOperationException($"Unknown message type {protoTypeName}.");

    public static string Namespace(FileDescriptorProto file) =>
        file.Options?.HasCsharpNamespace == true ? file.Options.CsharpNamespace : UnderscoresToPascalCase(file.Package, preservePeriod: true);

    /// <summary>The reflection class protoc emits for a file ("HelloworldReflection").</summary>
    public static string ReflectionClass(FileDescriptorProto file)
    {
        var baseName = Path.GetFileNameWithoutExtension(file.Name);
        return UnderscoresToPascalCase(baseName, preservePeriod: false) + "Reflection";
    }

    /// <summary>"chat/v1/chat.proto" -> "Chat.V1.ChatRpc.cs": one file per proto, unique per path.</summary>
    public static string OutputFileName(FileDescriptorProto file)
    {
        var withoutExtension = file.Name.EndsWith(".proto", StringComparison.Ordinal) ? file.Name[..^6] : file.Name;
        var parts = withoutExtension.Split('/').Select(p => UnderscoresToPascalCase(p, preservePeriod: false));
        return string.Join(".", parts) + "Rpc.cs";
    }

    /// <summary>protoc's csharp_helpers UnderscoresToCamelCase(input, cap_next_letter = true).</summary>
    public static string UnderscoresToPascalCase(string input, bool preservePeriod)
    {
        var result = new StringBuilder(input.Length);
        var capNext = true;
        for (var i = 0; i < input.Length; i++)
        {
            var c = input[i];
            if (c is >= 'a' and <= 'z')
            {
                result.Append(capNext ? char.ToUpperInvariant(c) : c);
                capNext = false;
            }
            else if (c is >= 'A' and <= 'Z')
            {
                result.Append(c);
                capNext = false;
            }
            else if (c is >= '0' and <= '9')
            {
                result.Append(c);
                capNext = true;
            }
            else
            {
                capNext = true;
                if (c == '.' && preservePeriod) result.Append('.');
            }
        }
        return result.ToString();
    }

    private void AddMessage(DescriptorProto message, string protoPrefix, string csharpPrefix)
    {
        var protoName = protoPrefix + message.Name;
        var csharpName = csharpPrefix + message.Name;
        _typeNames[protoName] = csharpName;
        foreach (var nested in message.NestedType)
        {
            if (nested.Options?.MapEntry == true) continue;
            AddMessage(nested, protoName + ".", csharpName + ".Types.");
        }
    }
}
