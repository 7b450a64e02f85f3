using System.Data.Common;
using System.Globalization;
using Conduit.Grpc;
using Conduit.Users.Storage;
using Grpc.Core;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Conduit.Services.Users;

/// <summary>
/// The statuses of the user store's failures, for user.v1.UserService calls only (registered in
/// DI; run by <see cref="ExceptionInterceptor"/> in place of the catch blocks every method had):
/// a taken email is ALREADY_EXISTS; a database that cannot be reached or is busy UNAVAILABLE with
/// RetryInfo; a full database disk RESOURCE_EXHAUSTED; a damaged database DATA_LOSS. A failure of
/// the database is logged here whole.
/// </summary>
public sealed class UsersExceptionMapper(ILogger<UsersExceptionMapper> logger) : IExceptionMapper
{
    private const string Service = "/user.v1.UserService/";

    /// <summary>The system-design guide's own contract (protos/seeds), answered by the same handlers.</summary>
    private const string SeedService = "/user.UserService/";

    /// <summary>How long a client should wait before retrying when the database is unavailable.</summary>
    public static readonly TimeSpan RetryDelay = TimeSpan.FromSeconds(1);

    public RpcException? Map(Exception exception, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (!context.Method.StartsWith(Service, StringComparison.Ordinal) && !context.Method.StartsWith(SeedService, StringComparison.Ordinal)) return null;
        switch (exception)
        {
            case EmailTakenException taken when context.Method is Service + "CreateUsers" or SeedService + "CreateUsers":
                return RpcException.WithDetails(StatusCode.AlreadyExists, $"Request {taken.Index}: {Quoted(taken)} Nothing was created.",
                    Details.ErrorInfo("EMAIL_TAKEN", UsersService.ErrorDomain, new Dictionary<string, string>
                    {
                        ["index"] = taken.Index.ToString(CultureInfo.InvariantCulture),
                        ["email"] = ClientInput.Shorten(taken.Email),
                    }));
            case EmailTakenException taken:
                return RpcException.WithDetails(StatusCode.AlreadyExists, Quoted(taken),
                    Details.ErrorInfo("EMAIL_TAKEN", UsersService.ErrorDomain, new Dictionary<string, string> { ["email"] = ClientInput.Shorten(taken.Email) }));
            case DbException db:
                return MapDatabase(db, context.Method);
            default:
                return null;
        }
    }

    /// <summary>The store's message, quoting the email shortened.</summary>
    private static string Quoted(EmailTakenException taken) => taken.Message.Replace(taken.Email, ClientInput.Shorten(taken.Email), StringComparison.Ordinal);

    private RpcException? MapDatabase(DbException ex, string method)
    {
        switch (Classify(ex))
        {
            case Failure.Full:
                logger.LogError(ex, "{Method}: the users database is full", method);
                return RpcException.WithDetails(StatusCode.ResourceExhausted, "The users database is full; nothing was changed.",
                    Details.ErrorInfo("DATABASE_FULL", UsersService.ErrorDomain),
                    Details.LocalizedMessage("The users database has no space left. Retry once the operator has freed space."));
            case Failure.Damaged:
                logger.LogError(ex, "{Method}: the users database is damaged", method);
                return RpcException.WithDetails(StatusCode.DataLoss, "The users database is damaged; the server's log says how.",
                    Details.ErrorInfo("DATABASE_CORRUPTED", UsersService.ErrorDomain));
            case Failure.Unavailable:
                logger.LogWarning("{Method}: the users database is unavailable: {Error}", method, ex.InnerException is { } inner ? $"{ex.Message} ({inner.Message})" : ex.Message);
                return RpcException.WithDetails(StatusCode.Unavailable, "The users database is unavailable: " + ex.Message,
                    Details.ErrorInfo("DATABASE_UNAVAILABLE", UsersService.ErrorDomain), Details.RetryInfo(RetryDelay));
            default:
                return null; // a bug, not a state of the database: UNKNOWN, and grpc-dotnet logs it
        }
    }

    private enum Failure { Other, Unavailable, Full, Damaged }

    private static Failure Classify(DbException ex) => ex switch
    {
        // https://www.sqlite.org/rescode.html
        SqliteException { SqliteErrorCode: 13 } => Failure.Full, // SQLITE_FULL
        SqliteException { SqliteErrorCode: 11 or 26 } => Failure.Damaged, // SQLITE_CORRUPT, SQLITE_NOTADB
        SqliteException { SqliteErrorCode: 5 or 6 or 10 or 14 or 15 } => Failure.Unavailable, // BUSY, LOCKED, IOERR, CANTOPEN, PROTOCOL
        // https://www.postgresql.org/docs/current/errcodes-appendix.html
        PostgresException { SqlState: PostgresErrorCodes.DiskFull } => Failure.Full,
        PostgresException { SqlState: PostgresErrorCodes.DataCorrupted or PostgresErrorCodes.IndexCorrupted } => Failure.Damaged,
        _ when ex.IsTransient => Failure.Unavailable,
        PostgresException { SqlState: var state } when state.StartsWith("08", StringComparison.Ordinal) || state.StartsWith("57P", StringComparison.Ordinal) => Failure.Unavailable,
        NpgsqlException { InnerException: IOException or System.Net.Sockets.SocketException or TimeoutException } => Failure.Unavailable,
        _ => Failure.Other,
    };
}
