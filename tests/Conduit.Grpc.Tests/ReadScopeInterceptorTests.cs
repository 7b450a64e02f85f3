using Conduit.Grpc;
using Grpc.Core;
using Microsoft.AspNetCore.Http;
using Xunit;

namespace Conduit.Grpc.Tests;

/// <summary>
/// The backstop of <see cref="ReadScopeInterceptor"/>: a read that does not end when the call's end
/// cancels it (a reader in the chain that dropped the token) must not stay on a stream Kestrel
/// would pool for the connection's next call. The stream is reset instead.
/// </summary>
public class ReadScopeInterceptorTests
{
    [Fact]
    public async Task A_read_that_ignores_the_end_of_the_call_resets_the_stream_after_the_bound()
    {
        var http = new DefaultHttpContext();
        var aborted = false;
        http.Features.Set<Microsoft.AspNetCore.Http.Features.IHttpRequestLifetimeFeature>(new Lifetime(() => aborted = true));
        var context = new Call(http);
        var deaf = new DeafReader();
        var interceptor = new ReadScopeInterceptor(TimeSpan.FromMilliseconds(200));

        var handled = interceptor.ClientStreamingServerHandler<string, string>(deaf, context, (requests, call) =>
        {
            _ = requests.MoveNext(CancellationToken.None); // started, never awaited: abandoned
            return Task.FromResult("done");
        });

        Assert.Equal("done", await handled.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.True(aborted, "the stream was reset while the read was still pending");
        Assert.False(deaf.Read.Task.IsCompleted);
    }

    [Fact]
    public async Task A_read_that_ends_when_cancelled_leaves_the_stream_alone()
    {
        var http = new DefaultHttpContext();
        var aborted = false;
        http.Features.Set<Microsoft.AspNetCore.Http.Features.IHttpRequestLifetimeFeature>(new Lifetime(() => aborted = true));
        var interceptor = new ReadScopeInterceptor(TimeSpan.FromSeconds(10));
        var listening = new ListeningReader();

        var handled = interceptor.ClientStreamingServerHandler<string, string>(listening, new Call(http), (requests, call) =>
        {
            _ = requests.MoveNext(CancellationToken.None);
            return Task.FromResult("done");
        });

        Assert.Equal("done", await handled.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.False(aborted);
    }

    /// <summary>A request stream whose read ignores its token.</summary>
    private sealed class DeafReader : IAsyncStreamReader<string>
    {
        public TaskCompletionSource<bool> Read { get; } = new();

        public string Current => "";

        public Task<bool> MoveNext(CancellationToken cancellationToken) => Read.Task;
    }

    /// <summary>A request stream whose read waits until its token is cancelled.</summary>
    private sealed class ListeningReader : IAsyncStreamReader<string>
    {
        public string Current => "";

        public async Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            await Task.Delay(Timeout.Infinite, cancellationToken);
            return false;
        }
    }

    private sealed class Lifetime(Action abort) : Microsoft.AspNetCore.Http.Features.IHttpRequestLifetimeFeature
    {
        public CancellationToken RequestAborted { get; set; }

        public void Abort() => abort();
    }

    /// <summary>A call whose HttpContext is <paramref name="http"/> (grpc-dotnet's GetHttpContext looks in UserState for contexts it did not make).</summary>
    private sealed class Call(HttpContext http) : ServerCallContext
    {
        private readonly Dictionary<object, object> _state = new() { ["__HttpContext"] = http };

        protected override string MethodCore => "/test.Test/ClientStream";
        protected override string HostCore => "localhost";
        protected override string PeerCore => "ipv4:127.0.0.1:5";
        protected override DateTime DeadlineCore => DateTime.MaxValue;
        protected override Metadata RequestHeadersCore { get; } = [];
        protected override CancellationToken CancellationTokenCore => CancellationToken.None;
        protected override Metadata ResponseTrailersCore { get; } = [];
        protected override global::Grpc.Core.Status StatusCore { get; set; }
        protected override WriteOptions? WriteOptionsCore { get; set; }
        protected override AuthContext AuthContextCore => new("", []);
        protected override IDictionary<object, object> UserStateCore => _state;
        protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) => throw new NotSupportedException();
        protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => Task.CompletedTask;
    }
}
