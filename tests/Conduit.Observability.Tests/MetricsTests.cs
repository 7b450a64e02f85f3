using Conduit.Protos.Accounts.V1;
using Conduit.Protos.Cache.V1;
using Conduit.Protos.Chat.V1;
using Conduit.Protos.Log.V1;
using Conduit.Services.Accounts;
using Google.Protobuf;

namespace Conduit.Observability.Tests;

/// <summary>/metrics: Conduit's own meters with the values the calls made, and the stack's.</summary>
public class MetricsTests
{
    private static CallOptions Timeout() => new CallOptions().WithTimeout(TimeSpan.FromSeconds(30));

    [Fact]
    public async Task Produced_records_count_as_appends_bytes_and_fsyncs_of_their_topic()
    {
        await using var server = await ObservedServer.StartAsync();
        var log = new Log.LogClient(server.Channel);
        const int n = 5;
        for (var i = 0; i < n; i++)
        {
            await log.ProduceAsync(new ProduceRequest { Topic = "metered", Record = new Protos.Log.V1.Record { Value = ByteString.CopyFromUtf8($"record {i}") } }, Timeout());
        }
        var metrics = await server.ScrapeAsync();
        var topic = ("topic", "metered");
        Assert.Equal(n, metrics.Value("conduit_log_appends_total", topic));
        // Each record frame is larger than its value; durability "always" fsyncs before each answer.
        Assert.InRange(metrics.Value("conduit_log_appended_bytes_total", topic), n * "record 0".Length + 1, 10_000);
        Assert.InRange(metrics.Value("conduit_log_fsyncs_total", topic), 1, n);
    }

    [Fact]
    public async Task Cache_hits_misses_quota_rejections_and_accounts_calls_are_counted()
    {
        await using var server = await ObservedServer.StartAsync();
        var before = await server.ScrapeAsync();
        var accounts = new Accounts.AccountsClient(server.Channel);
        var cache = new Cache.CacheClient(server.Channel);
        var created = await accounts.CreateAccountAsync(new CreateAccountReq { Name = "metered", MaxCacheKeys = 1, MaxValueBytes = 1024 }, Timeout());
        var auth = new CallOptions(new Metadata { BearerToken.Entry(created.Token) }).WithTimeout(TimeSpan.FromSeconds(30));

        await cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("v") }, auth);
        await cache.GetAsync(new GetReq { Key = "k" }, auth);
        await cache.GetAsync(new GetReq { Key = "k" }, auth);
        var miss = await Assert.ThrowsAsync<RpcException>(() => cache.GetAsync(new GetReq { Key = "absent" }, auth).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, miss.StatusCode);
        var overQuota = await Assert.ThrowsAsync<RpcException>(() => cache.StoreAsync(new StoreReq { Key = "second", Val = ByteString.CopyFromUtf8("v") }, auth).ResponseAsync);
        Assert.Equal(StatusCode.FailedPrecondition, overQuota.StatusCode);

        var after = await server.ScrapeAsync();
        double Delta(string name, params (string, string)[] labels) => after.Value(name, labels) - before.Value(name, labels);
        Assert.Equal(2, Delta("conduit_cache_hits_total"));
        Assert.Equal(1, Delta("conduit_cache_misses_total"));
        Assert.Equal(1, Delta("conduit_cache_quota_rejections_total", ("quota", "max_cache_keys")));
        // The token was looked up once at Accounts, then remembered.
        Assert.Equal(1, Delta("conduit_cache_accounts_calls_total"));
    }

    [Fact]
    public async Task Evictions_of_the_embedded_cache_are_counted()
    {
        // A cache of 1 KiB holds a few small entries: the next ones push the oldest out.
        await using var server = await ObservedServer.StartAsync(new Dictionary<string, string?> { ["Conduit:Cache:MaxMemoryBytes"] = "1024" });
        var before = await server.ScrapeAsync();
        var accounts = new Accounts.AccountsClient(server.Channel);
        var cache = new Cache.CacheClient(server.Channel);
        var created = await accounts.CreateAccountAsync(new CreateAccountReq { Name = "small", MaxCacheKeys = 100, MaxValueBytes = 1024 }, Timeout());
        var auth = new CallOptions(new Metadata { BearerToken.Entry(created.Token) }).WithTimeout(TimeSpan.FromSeconds(30));
        for (var i = 0; i < 10; i++) await cache.StoreAsync(new StoreReq { Key = $"k{i}", Val = ByteString.CopyFrom(new byte[200]) }, auth);
        var after = await server.ScrapeAsync();
        Assert.True(after.Value("conduit_cache_evictions_total") - before.Value("conduit_cache_evictions_total") >= 5, after.Text);
    }

    [Fact]
    public async Task Chat_room_sizes_are_gauges_read_at_scrape_time()
    {
        await using var server = await ObservedServer.StartAsync();
        var chat = new Chat.ChatClient(server.Channel);
        var headers = new Metadata { { "room", "observed" } };
        using var first = chat.ChatStream(headers, DateTime.UtcNow.AddSeconds(30));
        using var second = chat.ChatStream(headers, DateTime.UtcNow.AddSeconds(30));
        // Each has joined once its own message comes back.
        foreach (var (call, user) in new[] { (first, "a"), (second, "b") })
        {
            await call.RequestStream.WriteAsync(new ChatMessage { User = user, Text = "hi" });
            while (await call.ResponseStream.MoveNext(CancellationToken.None) && call.ResponseStream.Current.User != user) { }
        }
        var metrics = await server.ScrapeAsync();
        Assert.Equal(2, metrics.Value("conduit_chat_room_participants", ("room", "observed")));
        Assert.True(metrics.Value("conduit_chat_participants") >= 2);
        await first.RequestStream.CompleteAsync();
        await second.RequestStream.CompleteAsync();
    }

    [Fact]
    public async Task HttpMetrics_adds_ASP_NET_Core_s_per_request_histogram()
    {
        await using var server = await ObservedServer.StartAsync(new Dictionary<string, string?> { ["Conduit:Telemetry:HttpMetrics"] = "true" });
        var greeter = new Protos.HelloWorld.Greeter.GreeterClient(server.Channel);
        for (var i = 0; i < 3; i++) await greeter.SayHelloAsync(new Protos.HelloWorld.HelloRequest { Name = "metrics" }, Timeout());
        var metrics = await server.ScrapeAsync();
        Assert.Equal(3, metrics.Value("http_server_request_duration_seconds_count", ("http_route", "/helloworld.Greeter/SayHello")));
    }

    [Fact]
    public async Task The_stack_s_meters_and_the_per_method_grpc_histogram_are_served()
    {
        await using var server = await ObservedServer.StartAsync();
        var greeter = new Protos.HelloWorld.Greeter.GreeterClient(server.Channel);
        for (var i = 0; i < 3; i++) await greeter.SayHelloAsync(new Protos.HelloWorld.HelloRequest { Name = "metrics" }, Timeout());
        var log = new Log.LogClient(server.Channel);
        await Assert.ThrowsAsync<RpcException>(() => log.ConsumeAsync(new ConsumeRequest { Topic = "never-written", Offset = 7 }, Timeout()).ResponseAsync);

        var metrics = await server.ScrapeAsync();
        var sayHello = ("rpc_method", "/helloworld.Greeter/SayHello");
        Assert.Equal(3, metrics.Value("rpc_server_call_duration_seconds_count", sayHello, ("rpc_grpc_status_code", "0")));
        Assert.Equal(1, metrics.Value("rpc_server_call_duration_seconds_count", ("rpc_method", "/log.v1.Log/Consume")) - metrics.Value("rpc_server_call_duration_seconds_count", ("rpc_method", "/log.v1.Log/Consume"), ("rpc_grpc_status_code", "0")));
        // Kestrel's connections; the runtime's. ASP.NET Core's per-request histogram only when asked (below).
        Assert.False(metrics.Has("http_server_request_duration_seconds_count"), "http.server.request.duration is opt-in (HttpMetrics)");
        Assert.True(metrics.Value("kestrel_active_connections") >= 1, metrics.Text);
        Assert.True(metrics.Has("dotnet_gc_heap_total_allocated_bytes_total"));

        // grpc-dotnet's own EventCounters, bridged: published once a second, so read until they show the calls.
        var deadline = DateTime.UtcNow.AddSeconds(10);
        bool Counted(Metrics m) => m.Value("grpc_aspnetcore_server_calls_total") >= 4 && m.Value("grpc_aspnetcore_server_calls_failed_total") >= 1
            && m.Value("grpc_aspnetcore_server_messages_received_total") >= 4;
        while (!Counted(metrics) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(100);
            metrics = await server.ScrapeAsync();
        }
        Assert.True(Counted(metrics), metrics.Text);
    }

    [Fact]
    public async Task Metrics_can_be_turned_off()
    {
        await using var server = await ObservedServer.StartAsync(new Dictionary<string, string?> { ["Conduit:Telemetry:Metrics"] = "false" });
        using var http = new HttpClient { DefaultRequestVersion = System.Net.HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact };
        using var response = await http.GetAsync(new Uri(new Uri(server.Address), "/metrics"));
        Assert.Equal(System.Net.HttpStatusCode.NotFound, response.StatusCode);
    }
}
