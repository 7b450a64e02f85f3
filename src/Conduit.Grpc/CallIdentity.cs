using System.Security.Claims;
using Grpc.AspNetCore.Server;
using Grpc.Core;

namespace Conduit.Grpc;

/// <summary>
/// Who is calling: the principal the host's authentication found for this call (an account, the
/// operator, a client certificate's subject), as plain claims so services need no HTTP types.
/// A call that presented no identity, or a host without authentication, has an anonymous principal.
/// </summary>
public static class CallIdentity
{
    /// <summary>The role of the operator token's principal; the Accounts operator RPCs need it.</summary>
    public const string OperatorRole = "operator";

    private static readonly ClaimsPrincipal Anonymous = new(new ClaimsIdentity());

    public static ClaimsPrincipal User(ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        try
        {
            return context.GetHttpContext().User;
        }
        catch (InvalidOperationException)
        {
            return Anonymous; // a ServerCallContext made outside ASP.NET Core (a test's own)
        }
    }

    /// <summary>The principal's name ("account:&lt;id&gt;", "operator", "cert:&lt;common name&gt;"), or null without identity.</summary>
    public static string? Name(ServerCallContext context) => User(context) is { Identity.IsAuthenticated: true } user ? user.Identity.Name : null;

    public static bool IsOperator(ServerCallContext context) => User(context).IsInRole(OperatorRole);
}
