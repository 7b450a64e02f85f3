using System.Security.Claims;

namespace Conduit.Security;

/// <summary>
/// Who may call what, from a policy file (docs/operations.md, "Identity, permissions and
/// limits"): one rule per line, fields separated by blanks, '#' starts a comment.
/// <code>
/// role &lt;subject&gt; &lt;role&gt;            the subject has the role
/// allow &lt;who&gt; &lt;what&gt; [&lt;topic&gt;]     who: a subject, role:&lt;name&gt;, authenticated or anyone
///                                 what: service/method, service/*, *, or produce, consume, admin (the Log)
///                                 topic: a topic, a prefix ending in *, or * (the default)
/// </code>
/// Subjects are "operator" (the operator token), "account:&lt;id&gt;" (an Accounts token) and
/// "cert:&lt;common name&gt;" (a client certificate). Everything not allowed is denied, except
/// accounts.v1.Accounts/GetByToken, which anyone may call (the token in the request is the
/// credential), log.v1.Log/GetServers, which every authenticated caller may call (a client's
/// resolver asks it before producing or consuming), and log.v1.LogAdmin/ReadSnapshotFile, which
/// anyone may call: it serves a cluster leader's snapshot files only to a caller presenting the
/// capture's random token, which the leader gives its followers over Raft (docs/cluster.md).
/// </summary>
public sealed class PermissionPolicy
{
    public const string Anyone = "anyone";
    public const string Authenticated = "authenticated";
    public const string RolePrefix = "role:";

    private static readonly Rule GetByToken = new(Anyone, ["accounts.v1.Accounts/GetByToken"], "*");
    private static readonly Rule GetServers = new(Authenticated, ["log.v1.Log/GetServers"], "*");
    private static readonly Rule ReadSnapshotFile = new(Anyone, ["log.v1.LogAdmin/ReadSnapshotFile"], "*");

    private readonly List<Rule> _rules;
    private readonly Dictionary<string, List<string>> _roles;

    private PermissionPolicy(List<Rule> rules, Dictionary<string, List<string>> roles)
    {
        _rules = rules;
        _roles = roles;
    }

    /// <summary>The permissions a request needs, per Log action.</summary>
    public static IReadOnlyDictionary<string, string[]> Actions { get; } = new Dictionary<string, string[]>(StringComparer.Ordinal)
    {
        ["produce"] = ["log.v1.Log/Produce", "log.v1.Log/ProduceStream", "log.v1.Log/ProduceBatch", "log.v1.Log/InitProducer"],
        ["consume"] = ["log.v1.Log/Consume", "log.v1.Log/ConsumeStream"],
        ["admin"] = ["log.v1.LogAdmin/*"],
    };

    public static PermissionPolicy Load(string path) => Parse(File.ReadAllLines(path), path);

    /// <exception cref="FormatException">A line is not a rule; the message names the file and line.</exception>
    public static PermissionPolicy Parse(IEnumerable<string> lines, string source = "policy")
    {
        var rules = new List<Rule> { GetByToken, GetServers, ReadSnapshotFile };
        var roles = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        var number = 0;
        foreach (var raw in lines)
        {
            number++;
            var hash = raw.IndexOf('#', StringComparison.Ordinal);
            var fields = (hash >= 0 ? raw[..hash] : raw).Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length == 0) continue;
            FormatException Bad(string why) => new($"{source}:{number}: {why} (line '{Shorten(raw)}')");
            switch (fields[0])
            {
                case "role" when fields.Length == 3:
                    if (!roles.TryGetValue(fields[1], out var list)) roles[fields[1]] = list = [];
                    list.Add(fields[2]);
                    break;
                case "role":
                    throw Bad("a role line is 'role <subject> <role>'");
                case "allow" when fields.Length is 3 or 4:
                    var what = fields[2];
                    string[] methods = Actions.TryGetValue(what, out var action) ? action
                        : what == "*" || (what.IndexOf('/', StringComparison.Ordinal) is var slash and > 0 && slash < what.Length - 1) ? [what]
                        : throw Bad("what is service/method, service/*, *, produce, consume or admin");
                    var topic = fields.Length == 4 ? fields[3] : "*";
                    if (topic.IndexOf('*', StringComparison.Ordinal) is var star and >= 0 && star != topic.Length - 1) throw Bad("a topic pattern may only end in *");
                    rules.Add(new Rule(fields[1], methods, topic));
                    break;
                case "allow":
                    throw Bad("an allow line is 'allow <who> <what> [<topic>]'");
                default:
                    throw Bad($"unknown rule '{Shorten(fields[0])}': 'role' or 'allow'");
            }
        }
        return new PermissionPolicy(rules, roles);
    }

    /// <summary>The roles the policy gives <paramref name="subject"/>.</summary>
    public IReadOnlyList<string> RolesOf(string subject) => _roles.TryGetValue(subject, out var list) ? list : [];

    /// <summary>
    /// Whether <paramref name="user"/> may call <paramref name="method"/> ("service/method") on
    /// <paramref name="topic"/>; a null topic asks for every topic (a method without topics, or a
    /// stream whose messages are not seen yet).
    /// </summary>
    public bool Allows(ClaimsPrincipal user, string method, string? topic) =>
        _rules.Exists(r => r.Matches(user, method) && (topic is null ? r.Topic == "*" : r.MatchesTopic(topic)));

    /// <summary>Whether some rule lets <paramref name="user"/> call <paramref name="method"/> on at least one topic.</summary>
    public bool AllowsSomeTopic(ClaimsPrincipal user, string method) => _rules.Exists(r => r.Matches(user, method));

    /// <summary>Whether a caller without identity could call <paramref name="method"/> on some topic.</summary>
    public bool OpenToAnyone(string method) => _rules.Exists(r => r.Who == Anyone && r.MatchesMethod(method));

    internal static string Shorten(string text) => text.Length <= 128 ? text : text[..125] + "...";

    private sealed record Rule(string Who, string[] Methods, string Topic)
    {
        public bool Matches(ClaimsPrincipal user, string method) => MatchesWho(user) && MatchesMethod(method);

        public bool MatchesMethod(string method) => Array.Exists(Methods, m => Like(method, m));

        public bool MatchesTopic(string topic) => Like(topic, Topic);

        private bool MatchesWho(ClaimsPrincipal user)
        {
            if (Who == Anyone) return true;
            if (user.Identity?.IsAuthenticated != true) return false;
            if (Who == Authenticated) return true;
            return Who.StartsWith(RolePrefix, StringComparison.Ordinal) ? user.IsInRole(Who[RolePrefix.Length..]) : string.Equals(user.Identity.Name, Who, StringComparison.Ordinal);
        }

        /// <summary>Exact, or a prefix when the pattern ends in '*'.</summary>
        private static bool Like(string value, string pattern) =>
            pattern.EndsWith('*') ? value.AsSpan().StartsWith(pattern.AsSpan(0, pattern.Length - 1), StringComparison.Ordinal) : value == pattern;
    }
}
