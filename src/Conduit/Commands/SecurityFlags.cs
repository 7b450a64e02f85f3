using System.CommandLine;
using System.Globalization;
using Conduit.Security;

namespace Conduit.Commands;

/// <summary>`conduit serve`'s flags for identity, permissions and limits, mapped onto "Conduit:Security" keys.</summary>
internal sealed class SecurityFlags
{
    private readonly Option<string?> _policy = new("--policy") { Description = "Permission policy file (docs/operations.md); without one everything is open and only loopback may be bound" };
    private readonly Option<bool> _allowOpen = new("--allow-open") { Description = "Without --policy, bind non-loopback addresses anyway (anyone who connects may call everything)" };
    private readonly Option<ClientCertificates?> _clientCerts = new("--client-certs") { Description = "https:// listeners ask for client certificates: None (default), Optional or Required" };
    private readonly Option<string?> _clientCa = new("--client-ca") { Description = "PEM CA that client certificates must chain to" };
    private readonly Option<int?> _rateLimit = new("--rate-limit") { Description = "Calls per second per principal (default 0: no limit)" };

    public static SecurityFlags AddTo(Command command)
    {
        var flags = new SecurityFlags();
        command.Options.Add(flags._policy);
        command.Options.Add(flags._allowOpen);
        command.Options.Add(flags._clientCerts);
        command.Options.Add(flags._clientCa);
        command.Options.Add(flags._rateLimit);
        return flags;
    }

    public void Map(ParseResult parse, Dictionary<string, string?> overrides)
    {
        const string section = SecurityOptions.Section;
        if (parse.GetValue(_policy) is { } policy) overrides[$"{section}:PolicyFile"] = policy;
        if (parse.GetValue(_allowOpen)) overrides[$"{section}:AllowOpen"] = "true";
        if (parse.GetValue(_clientCerts) is { } mode) overrides[$"{section}:ClientCertificates"] = mode.ToString();
        if (parse.GetValue(_clientCa) is { } ca) overrides[$"{section}:ClientCa"] = ca;
        if (parse.GetValue(_rateLimit) is { } limit) overrides[$"{section}:RateLimit:Permits"] = limit.ToString(CultureInfo.InvariantCulture);
    }
}
