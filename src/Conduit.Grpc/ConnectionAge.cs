using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;

namespace Conduit.Grpc;

/// <summary>
/// grpc-go's MaxConnectionAge and MaxConnectionAgeGrace for Kestrel, which lacks them: a Kestrel
/// connection middleware (<see cref="ConnectionAgeExtensions.UseConnectionAge(ListenOptions, ConnectionAge)"/>)
/// that, once a connection is <see cref="MaxAge"/> old (±10% jitter, so connections made together
/// do not all leave together), asks Kestrel to close it gracefully
/// (<see cref="IConnectionLifetimeNotificationFeature.RequestClose"/>: an HTTP/2 GOAWAY; calls in
/// flight finish, new calls go to a new connection, so load spreads again over servers added
/// since). After a further <see cref="Grace"/> the connection is aborted, and calls still running
/// on it end UNAVAILABLE at the client. Without a grace they may run on.
/// <para>
/// When. Kestrel announces the close with GOAWAY(last stream 2^31-1) only while the client has a
/// stream open; on an idle connection it sends the final GOAWAY and closes at once, and a call the
/// client sent at that instant fails (a request whose body was sent is not retried). So the GOAWAY
/// is sent when the next call after the age arrives (the request side,
/// <see cref="ConnectionAgeExtensions.UseConnectionAge(IApplicationBuilder)"/>), and that call waits
/// <see cref="AnnounceDelay"/> before it runs, so the client reads the announcement before the
/// call's response and sends its next calls elsewhere, as grpc-go's GOAWAY-then-PING does. A
/// connection that gets no call for <see cref="IdleCloseDelay"/> after its age is closed anyway.
/// </para>
/// </summary>
public sealed partial class ConnectionAge
{
    private static readonly object ItemKey = new();
    private readonly ILogger _logger;
    private readonly TimeProvider _time;

    public ConnectionAge(TimeSpan maxAge, TimeSpan? grace = null, ILogger? logger = null, TimeProvider? time = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(maxAge, TimeSpan.Zero);
        if (grace is { } g) ArgumentOutOfRangeException.ThrowIfLessThan(g, TimeSpan.Zero, nameof(grace));
        MaxAge = maxAge;
        Grace = grace;
        _logger = logger ?? Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
        _time = time ?? TimeProvider.System;
    }

    public TimeSpan MaxAge { get; }

    /// <summary>How long calls may run on after the GOAWAY; null: as long as they take.</summary>
    public TimeSpan? Grace { get; }

    /// <summary>How long the call that triggers the GOAWAY waits, so the client reads the GOAWAY before its response.</summary>
    public TimeSpan AnnounceDelay { get; init; } = TimeSpan.FromMilliseconds(20);

    /// <summary>How long after its age a connection with no new call is closed anyway.</summary>
    public TimeSpan IdleCloseDelay { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>The age at which one connection is told to go: <see cref="MaxAge"/> ±10%, as grpc-go jitters it.</summary>
    public TimeSpan NextAge() => MaxAge * (0.9 + 0.2 * Random.Shared.NextDouble());

    /// <summary>The connection middleware (for <c>ListenOptions.Use</c>).</summary>
    public ConnectionDelegate Middleware(ConnectionDelegate next)
    {
        ArgumentNullException.ThrowIfNull(next);
        return async connection =>
        {
            using var aging = new Aging(this, connection);
            connection.Items[ItemKey] = aging;
            await next(connection).ConfigureAwait(false);
        };
    }

    /// <summary>The request side: the first call on a connection past its age sends the GOAWAY, then runs.</summary>
    public static Task OnRequestAsync(HttpContext http, RequestDelegate next)
    {
        ArgumentNullException.ThrowIfNull(http);
        ArgumentNullException.ThrowIfNull(next);
        if (http.Features.Get<IConnectionItemsFeature>()?.Items is { } items
            && items.TryGetValue(ItemKey, out var value) && value is Aging { IsPastAge: true } aging && aging.GoAway())
        {
            return AnnouncedAsync(http, next, aging.Owner);
        }
        return next(http);
    }

    private static async Task AnnouncedAsync(HttpContext http, RequestDelegate next, ConnectionAge owner)
    {
        await Task.Delay(owner.AnnounceDelay, owner._time, http.RequestAborted).ConfigureAwait(false);
        await next(http).ConfigureAwait(false);
    }

    /// <summary>One connection's timers: its age, the close of an idle one, the abort after the grace.</summary>
    private sealed class Aging : IDisposable
    {
        private readonly ConnectionContext _connection;
        private readonly Lock _lock = new();
        private readonly ITimer _age;
        private ITimer? _idleClose;
        private ITimer? _abort;
        private bool _pastAge;
        private bool _goneAway;
        private bool _disposed;

        public Aging(ConnectionAge owner, ConnectionContext connection)
        {
            Owner = owner;
            _connection = connection;
            _age = owner._time.CreateTimer(static s => ((Aging)s!).PastAge(), this, owner.NextAge(), Timeout.InfiniteTimeSpan);
        }

        public ConnectionAge Owner { get; }

        public bool IsPastAge => Volatile.Read(ref _pastAge);

        private void PastAge()
        {
            lock (_lock)
            {
                if (_disposed) return;
                Volatile.Write(ref _pastAge, true);
                _idleClose = Owner._time.CreateTimer(static s => ((Aging)s!).GoAway(), this, Owner.IdleCloseDelay, Timeout.InfiniteTimeSpan);
            }
        }

        /// <summary>Sends the GOAWAY once; true for the caller that sent it.</summary>
        public bool GoAway()
        {
            lock (_lock)
            {
                if (_disposed || _goneAway) return false;
                _goneAway = true;
                LogGoAway(Owner._logger, _connection.ConnectionId, Owner.MaxAge);
                if (Owner.Grace is { } grace) _abort = Owner._time.CreateTimer(static s => ((Aging)s!).Abort(), this, grace, Timeout.InfiniteTimeSpan);
            }
            var lifetime = _connection.Features.Get<IConnectionLifetimeNotificationFeature>();
            if (lifetime is not null) lifetime.RequestClose();
            else _connection.Abort(new ConnectionAbortedException("The connection reached its maximum age."));
            return true;
        }

        private void Abort()
        {
            lock (_lock)
            {
                if (_disposed) return;
                LogAbort(Owner._logger, _connection.ConnectionId, Owner.Grace ?? TimeSpan.Zero);
            }
            _connection.Abort(new ConnectionAbortedException("The connection outlived its maximum age and grace period."));
        }

        public void Dispose()
        {
            lock (_lock) _disposed = true;
            _age.Dispose();
            _idleClose?.Dispose();
            _abort?.Dispose();
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Connection {ConnectionId} reached its maximum age ({MaxAge}): GOAWAY, new calls go to a new connection.")]
    private static partial void LogGoAway(ILogger logger, string connectionId, TimeSpan maxAge);

    [LoggerMessage(Level = LogLevel.Information, Message = "Connection {ConnectionId} still had calls {Grace} after its GOAWAY (MaxConnectionAgeGrace): aborted, they end UNAVAILABLE.")]
    private static partial void LogAbort(ILogger logger, string connectionId, TimeSpan grace);
}

public static class ConnectionAgeExtensions
{
    /// <summary>Applies <paramref name="age"/> to every connection of this listener.</summary>
    public static ListenOptions UseConnectionAge(this ListenOptions listen, ConnectionAge age)
    {
        ArgumentNullException.ThrowIfNull(listen);
        ArgumentNullException.ThrowIfNull(age);
        listen.Use(age.Middleware);
        return listen;
    }

    /// <summary>The request side of <see cref="ConnectionAge"/> (see there); anywhere in the pipeline.</summary>
    public static IApplicationBuilder UseConnectionAge(this IApplicationBuilder app)
    {
        ArgumentNullException.ThrowIfNull(app);
        return app.Use((http, next) => ConnectionAge.OnRequestAsync(http, next));
    }
}
