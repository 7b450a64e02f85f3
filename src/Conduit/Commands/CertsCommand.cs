using System.CommandLine;
using Conduit.Security;

namespace Conduit.Commands;

/// <summary>`conduit certs dev`: a development CA with server and client certificates (DevCertificates).</summary>
internal static class CertsCommand
{
    public static Command Create()
    {
        var names = new Argument<string[]>("clients") { Description = "Client certificate names (their common names; default: root nobody)", Arity = ArgumentArity.ZeroOrMore };
        var output = new Option<string>("--out") { Description = "Folder to write the PEM files to", DefaultValueFactory = _ => "certs" };
        var dev = new Command("dev", "Write a development CA, a server certificate for localhost/127.0.0.1/::1 and client certificates (PEM)") { names, output };
        dev.SetAction(parse =>
        {
            var clients = parse.GetValue(names) is { Length: > 0 } given ? given : ["root", "nobody"];
            if (clients.FirstOrDefault(n => !DevCertificates.IsValidName(n)) is { } bad)
            {
                Console.Error.WriteLine($"error: '{PermissionPolicy.Shorten(bad)}' is not a client name: 1 to 64 letters, digits, '-', '_' or '.', not 'ca' or 'server'");
                return 2;
            }
            var directory = parse.GetValue(output)!;
            DevCertificates.Write(directory, clients);
            var dir = directory.TrimEnd('/');
            Console.WriteLine($"{dir}/ca.pem: the CA (serve --client-ca, clients --ca-file); its key {dir}/ca-key.pem");
            Console.WriteLine($"{dir}/server.pem, {dir}/server-key.pem: localhost, 127.0.0.1, ::1 (serve --tls-cert, --tls-key)");
            foreach (var client in clients) Console.WriteLine($"{dir}/{client}.pem, {dir}/{client}-key.pem: client cert:{client} (--cert, --key)");
            return 0;
        });
        var command = new Command("certs", "Certificates for TLS and mutual TLS") { dev };
        return command;
    }
}
