using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Conduit.Interop;
using Conduit.Protos.Grpc.Testing;
using Conduit.Protos.HelloWorld;
using Conduit.Services.Greeter;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Grpc.Tests;

/// <summary>The client channel against real servers: deadlines, cancellation, metadata, errors, concurrency.</summary>
public class ClientTests
{
    [Fact]
    public async Task Greeter_says_hello()
    {
        await using var host = await StartGreeterAndTestService();
        var reply = await new Greeter.GreeterClient(host.Channel).SayHelloAsync(new HelloRequest { Name = "World" });
        Assert.Equal("Hello World", reply.Message);
    }

    [Fact]
    public async Task Deadline_is_raised_locally_when_the_server_never_answers()
    {
        // A TCP listener that accepts and never speaks: no HTTP/2, no status, nothing.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var channel = ConduitChannel.ForAddress($"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}");
        var client = new Greeter.GreeterClient(channel);
        var watch = Stopwatch.StartNew();
        var ex = await Assert.ThrowsAsync<RpcException>(() => client.SayHelloAsync(new HelloRequest(), new CallOptions().WithTimeout(TimeSpan.FromMilliseconds(300))).ResponseAsync);
        Assert.Equal(StatusCode.DeadlineExceeded, ex.StatusCode);
        Assert.InRange(watch.Elapsed, TimeSpan.FromMilliseconds(250), TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task A_deadline_already_past_fails_without_sending()
    {
        await using var host = await StartGreeterAndTestService();
        var ex = await Assert.ThrowsAsync<RpcException>(() => new Greeter.GreeterClient(host.Channel)
            .SayHelloAsync(new HelloRequest(), new CallOptions(deadline: DateTime.UtcNow.AddSeconds(-1))).ResponseAsync);
        Assert.Equal(StatusCode.DeadlineExceeded, ex.StatusCode);
    }

    [Fact]
    public async Task Server_deadline_cancels_the_handler_and_answers_deadline_exceeded()
    {
        var probe = new Probe();
        await using var host = await TestHost.StartAsync(s => s.AddSingleton(probe).AddSingleton<ProbeService>(), a => a.MapGrpcService<ProbeService>());
        var client = new TestService.TestServiceClient(host.Channel);
        // The client deadline is generous; the server sees a short grpc-timeout through a raw call.
        var raw = await host.PostAsync("/grpc.testing.TestService/UnaryCall", new ByteArrayContent(TestHost.Frame(new SimpleRequest { ResponseSize = -1 })), headers: ("grpc-timeout", "100m"));
        Assert.Equal("4", raw.GrpcStatus);
        Assert.True(await probe.HandlerCancelled.Task.WaitAsync(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task Calls_made_inside_a_handler_inherit_the_remaining_deadline()
    {
        var probe = new Probe();
        await using var host = await TestHost.StartAsync(s => s.AddSingleton(probe).AddSingleton<ProbeService>(), a => a.MapGrpcService<ProbeService>());
        probe.Channel = host.Channel;
        var deadline = DateTime.UtcNow.AddSeconds(20);
        await new TestService.TestServiceClient(host.Channel).UnaryCallAsync(new SimpleRequest { ResponseSize = 1 }, new CallOptions(deadline: deadline));
        var inner = await probe.InnerDeadline.Task.WaitAsync(TimeSpan.FromSeconds(5));
        // Each server turns the relative grpc-timeout into a deadline when the request arrives, so
        // the inner deadline is the caller's plus two transit times: allow for a loaded machine.
        Assert.True(inner <= deadline.AddSeconds(2), $"inner deadline {inner:O} outlives the caller's {deadline:O}");
        Assert.True(inner > deadline.AddSeconds(-5), $"inner deadline {inner:O} is not the propagated one");
    }

    [Fact]
    public async Task An_inner_call_ended_by_the_inherited_deadline_reports_deadline_exceeded()
    {
        var probe = new Probe();
        await using var host = await TestHost.StartAsync(s => s.AddSingleton(probe).AddSingleton<ProbeService>(), a => a.MapGrpcService<ProbeService>());
        probe.Channel = host.Channel;
        // Raw, so no client-side timer cancels the outer call first: the server's deadline ends
        // it, and with it the inner call. grpc-dotnet: the handler hands on its deadline and its
        // cancellation token; the server cancels the token when the deadline passes, so the inner
        // call usually ends CANCELLED (the old runtime said DEADLINE_EXCEEDED), never later.
        var raw = await host.PostAsync("/grpc.testing.TestService/UnaryCall", new ByteArrayContent(TestHost.Frame(new SimpleRequest { ResponseSize = -2 })), headers: ("grpc-timeout", "300m"));
        Assert.Equal("4", raw.GrpcStatus);
        var inner = await probe.InnerStatus.Task.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.True(inner is StatusCode.DeadlineExceeded or StatusCode.Cancelled, $"inner call ended {inner}");
    }

    [Fact]
    public async Task Client_cancel_mid_stream_reaches_the_handler()
    {
        var probe = new Probe();
        await using var host = await TestHost.StartAsync(s => s.AddSingleton(probe).AddSingleton<ProbeService>(), a => a.MapGrpcService<ProbeService>());
        using var cts = new CancellationTokenSource();
        using var call = new TestService.TestServiceClient(host.Channel).FullDuplexCall(new CallOptions(cancellationToken: cts.Token));
        var request = new StreamingOutputCallRequest();
        request.ResponseParameters.Add(new ResponseParameters { Size = 10 });
        await call.RequestStream.WriteAsync(request);
        Assert.True(await call.ResponseStream.MoveNext());
        await cts.CancelAsync();
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await call.ResponseStream.MoveNext());
        Assert.Equal(StatusCode.Cancelled, ex.StatusCode);
        Assert.True(await probe.HandlerCancelled.Task.WaitAsync(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task Cancelling_reaches_the_server_even_when_nobody_is_reading()
    {
        var probe = new Probe();
        await using var host = await TestHost.StartAsync(s => s.AddSingleton(probe).AddSingleton<ProbeService>(), a => a.MapGrpcService<ProbeService>());
        using var cts = new CancellationTokenSource();
        using var call = new TestService.TestServiceClient(host.Channel).FullDuplexCall(new CallOptions(cancellationToken: cts.Token));
        await call.RequestStream.WriteAsync(new StreamingOutputCallRequest());
        Assert.True(await call.ResponseStream.MoveNext());
        await cts.CancelAsync(); // no read pending: the stream must be reset all the same
        Assert.True(await probe.HandlerCancelled.Task.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.Equal(StatusCode.Cancelled, call.GetStatus().StatusCode);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_running_unary_call_without_a_deadline_ends_at_once_when_disposed_or_cancelled(bool byToken)
    {
        // Without a deadline the call's own token source has no callback: Cancel and Dispose end
        // the call themselves. Nobody awaits the response while it is cancelled.
        var probe = new Probe();
        await using var host = await TestHost.StartAsync(s => s.AddSingleton(probe).AddSingleton<ProbeService>(), a => a.MapGrpcService<ProbeService>());
        using var cts = new CancellationTokenSource();
        var call = new TestService.TestServiceClient(host.Channel).UnaryCallAsync(new SimpleRequest { ResponseSize = -1 }, new CallOptions(cancellationToken: cts.Token));
        await probe.HandlerWaiting.Task.WaitAsync(TimeSpan.FromSeconds(5));
        if (byToken) await cts.CancelAsync();
        else call.Dispose();
        Assert.Equal(StatusCode.Cancelled, call.GetStatus().StatusCode); // recorded before Cancel/Dispose returned
        Assert.Equal(byToken ? "Call canceled by the client." : "gRPC call disposed.", call.GetStatus().Detail);
        var ex = await Assert.ThrowsAsync<RpcException>(() => call.ResponseAsync);
        Assert.Equal(StatusCode.Cancelled, ex.StatusCode);
        Assert.True(await probe.HandlerCancelled.Task.WaitAsync(TimeSpan.FromSeconds(5)));
        call.Dispose();
    }

    [Fact]
    public async Task Many_concurrent_calls_share_one_channel()
    {
        await using var host = await StartGreeterAndTestService();
        var greeter = new Greeter.GreeterClient(host.Channel);
        var test = new TestService.TestServiceClient(host.Channel);
        var unary = Enumerable.Range(0, 500).Select(async i =>
            Assert.Equal($"Hello {i}", (await greeter.SayHelloAsync(new HelloRequest { Name = i.ToString() })).Message));
        var streams = Enumerable.Range(0, 50).Select(async i =>
        {
            var request = new StreamingOutputCallRequest();
            request.ResponseParameters.AddRange(Enumerable.Range(1, 20).Select(size => new ResponseParameters { Size = size }));
            using var call = test.StreamingOutputCall(request);
            var sizes = new List<int>();
            await foreach (var response in call.ResponseStream.ReadAllAsync()) sizes.Add(response.Payload.Body.Length);
            Assert.Equal(Enumerable.Range(1, 20), sizes);
        });
        await Task.WhenAll(unary.Concat(streams));
    }

    [Fact]
    public async Task Metadata_with_binary_values_round_trips_in_headers_and_trailers()
    {
        await using var host = await StartGreeterAndTestService();
        var headers = new Metadata { { TestServiceImpl.EchoInitialKey, "hello" }, { TestServiceImpl.EchoTrailingKey, new byte[] { 0, 1, 2, 254, 255 } } };
        using var call = new TestService.TestServiceClient(host.Channel).UnaryCallAsync(new SimpleRequest(), new CallOptions(headers));
        await call;
        Assert.Equal("hello", (await call.ResponseHeadersAsync).GetValue(TestServiceImpl.EchoInitialKey));
        Assert.Equal(new byte[] { 0, 1, 2, 254, 255 }, call.GetTrailers().GetValueBytes(TestServiceImpl.EchoTrailingKey));
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
    }

    [Fact]
    public async Task Response_headers_and_trailers_are_the_same_whenever_they_are_asked_for()
    {
        // The client turns headers and trailers into Metadata lazily: asking before the response
        // arrived, after the call ended, or twice must all give the server's values.
        await using var host = await StartGreeterAndTestService();
        var client = new TestService.TestServiceClient(host.Channel);
        var headers = new Metadata { { TestServiceImpl.EchoInitialKey, "early" }, { TestServiceImpl.EchoTrailingKey, new byte[] { 7 } } };
        using (var call = client.UnaryCallAsync(new SimpleRequest(), new CallOptions(headers)))
        {
            var early = call.ResponseHeadersAsync; // asked before anything arrived
            await call;
            Assert.Equal("early", (await early).GetValue(TestServiceImpl.EchoInitialKey));
            Assert.Same(await early, await call.ResponseHeadersAsync);
            Assert.Equal(new byte[] { 7 }, call.GetTrailers().GetValueBytes(TestServiceImpl.EchoTrailingKey));
            Assert.Same(call.GetTrailers(), call.GetTrailers());
        }
        using (var call = client.UnaryCallAsync(new SimpleRequest(), new CallOptions(headers)))
        {
            await call; // asked only once the call is over
            Assert.Equal("early", (await call.ResponseHeadersAsync).GetValue(TestServiceImpl.EchoInitialKey));
            Assert.Equal(new byte[] { 7 }, call.GetTrailers().GetValueBytes(TestServiceImpl.EchoTrailingKey));
            Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
        }

        // A call that fails before any headers: the headers task fails with the call's status,
        // asked before or after it failed.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        using var dead = ConduitChannel.ForAddress($"http://127.0.0.1:{port}");
        using (var call = new Greeter.GreeterClient(dead).SayHelloAsync(new HelloRequest()))
        {
            var before = call.ResponseHeadersAsync;
            Assert.Equal(StatusCode.Unavailable, (await Assert.ThrowsAsync<RpcException>(() => call.ResponseAsync)).StatusCode);
            Assert.Equal(StatusCode.Unavailable, (await Assert.ThrowsAsync<RpcException>(() => before)).StatusCode);
            Assert.Equal(StatusCode.Unavailable, (await Assert.ThrowsAsync<RpcException>(() => call.ResponseHeadersAsync)).StatusCode);
            // grpc-dotnet: a call that never received trailers has none to give (the old runtime
            // returned empty trailers).
            Assert.Throws<InvalidOperationException>(() => call.GetTrailers());
        }
    }

    [Fact]
    public async Task Rich_error_details_reach_the_client()
    {
        var probe = new Probe();
        await using var host = await TestHost.StartAsync(s => s.AddSingleton(probe).AddSingleton<ProbeService>(), a => a.MapGrpcService<ProbeService>());
        var ex = await Assert.ThrowsAsync<RpcException>(() => new TestService.TestServiceClient(host.Channel).EmptyCallAsync(new Empty()).ResponseAsync);
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        Assert.Equal("slow down ☺", ex.Status.Detail);
        Assert.Equal(TimeSpan.FromSeconds(3), ex.GetDetail<Google.Rpc.RetryInfo>()!.RetryDelay.ToTimeSpan());
        Assert.Equal("tokens", ex.GetDetail<Google.Rpc.QuotaFailure>()!.Violations[0].Subject);
        Assert.Null(ex.GetDetail<Google.Rpc.BadRequest>());
    }

    [Fact]
    public async Task Response_larger_than_the_client_receive_limit_is_resource_exhausted()
    {
        await using var host = await StartGreeterAndTestService();
        using var channel = ConduitChannel.ForAddress(host.Address, o => o.MaxReceiveMessageSize = 1000);
        var ex = await Assert.ThrowsAsync<RpcException>(() => new TestService.TestServiceClient(channel).UnaryCallAsync(new SimpleRequest { ResponseSize = 5000 }).ResponseAsync);
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
    }

    [Fact]
    public async Task A_unary_request_over_the_send_limit_fails_locally_and_the_next_calls_are_intact()
    {
        // Unary requests are serialized through one reused writer per thread: a failed or a large
        // serialization must leave nothing behind for the next call.
        await using var host = await StartGreeterAndTestService();
        using var channel = ConduitChannel.ForAddress(host.Address, o => o.MaxSendMessageSize = 100_000);
        var client = new TestService.TestServiceClient(channel);
        var ex = await Assert.ThrowsAsync<RpcException>(() => client.UnaryCallAsync(new SimpleRequest { Payload = new Payload { Body = ByteString.CopyFrom(new byte[200_000]) } }).ResponseAsync);
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        foreach (var size in new[] { 3, 90_000, 0, 70_000, 5 })
        {
            var body = ByteString.CopyFrom(Enumerable.Range(0, size).Select(i => (byte)i).ToArray());
            var response = await client.UnaryCallAsync(new SimpleRequest { ResponseSize = size, Payload = new Payload { Body = body } });
            Assert.Equal(size, response.Payload.Body.Length);
        }
    }

    [Fact]
    public async Task A_request_stream_reuses_one_buffer_across_messages_of_any_size()
    {
        // The writes of a call share one buffer, cleared after each and dropped when a message grew
        // it past 64 KiB: every message must still arrive whole, whatever came before it.
        await using var host = await StartGreeterAndTestService();
        using var call = new TestService.TestServiceClient(host.Channel).StreamingInputCall();
        var sizes = new[] { 100_000, 10, 70_000, 0, 5, 65_000, 3 };
        foreach (var size in sizes)
        {
            await call.RequestStream.WriteAsync(new StreamingInputCallRequest { Payload = new Payload { Body = ByteString.CopyFrom(new byte[size]) } });
        }
        await call.RequestStream.CompleteAsync();
        Assert.Equal(sizes.Sum(), (await call).AggregatedPayloadSize);
    }

    [Fact]
    public async Task A_streaming_message_over_the_send_limit_fails_the_call()
    {
        await using var host = await StartGreeterAndTestService();
        using var channel = ConduitChannel.ForAddress(host.Address, o => o.MaxSendMessageSize = 1000);
        using var call = new TestService.TestServiceClient(channel).StreamingInputCall();
        var ex = await Assert.ThrowsAsync<RpcException>(() => call.RequestStream.WriteAsync(new StreamingInputCallRequest { Payload = new Payload { Body = ByteString.CopyFrom(new byte[5000]) } }));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        // grpc-dotnet fails the write only: the call stays open until the client disposes it (the
        // old runtime failed the whole call RESOURCE_EXHAUSTED).
        Assert.False(call.ResponseAsync.IsCompleted);
        call.Dispose();
        var response = await Assert.ThrowsAsync<RpcException>(() => call.ResponseAsync);
        Assert.Equal(StatusCode.Cancelled, response.StatusCode);
    }

    [Fact]
    public async Task Unreachable_server_is_unavailable()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        using var channel = ConduitChannel.ForAddress($"http://127.0.0.1:{port}");
        var ex = await Assert.ThrowsAsync<RpcException>(() => new Greeter.GreeterClient(channel).SayHelloAsync(new HelloRequest()).ResponseAsync);
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
    }

    [Theory]
    [InlineData(404, StatusCode.Unimplemented)]
    [InlineData(401, StatusCode.Unauthenticated)]
    [InlineData(403, StatusCode.PermissionDenied)]
    [InlineData(503, StatusCode.Unavailable)]
    [InlineData(400, StatusCode.Internal)]
    [InlineData(500, StatusCode.Unknown)]
    public async Task Http_errors_map_to_grpc_codes(int httpStatus, StatusCode expected)
    {
        // A plain HTTP/2 endpoint (no gRPC) answering with an HTTP error, as a proxy might.
        await using var host = await TestHost.StartAsync(map: app => app.MapPost("/helloworld.Greeter/SayHello", (HttpContext http) =>
        {
            http.Response.StatusCode = httpStatus;
            return Task.CompletedTask;
        }));
        var ex = await Assert.ThrowsAsync<RpcException>(() => new Greeter.GreeterClient(host.Channel).SayHelloAsync(new HelloRequest()).ResponseAsync);
        Assert.Equal(expected, ex.StatusCode);
    }

    public enum UnaryBody { OneMessage, OneMessageInPieces, LargeMessageInPieces, TwoMessages, TruncatedFrame, NoMessage, NoStatus, MessageThenError }

    [Theory]
    [InlineData(UnaryBody.OneMessage, StatusCode.OK, "")]
    [InlineData(UnaryBody.OneMessageInPieces, StatusCode.OK, "")]
    [InlineData(UnaryBody.LargeMessageInPieces, StatusCode.OK, "")]
    [InlineData(UnaryBody.TwoMessages, StatusCode.Internal, "Error starting gRPC call. InvalidDataException: Unexpected data after finished reading message.")]
    [InlineData(UnaryBody.TruncatedFrame, StatusCode.Internal, "Error starting gRPC call. InvalidDataException: Unexpected end of content while reading the message content.")]
    [InlineData(UnaryBody.NoMessage, StatusCode.Internal, "Failed to deserialize response message.")]
    // grpc-dotnet answers a response without grpc-status CANCELLED (the old runtime: INTERNAL).
    [InlineData(UnaryBody.NoStatus, StatusCode.Cancelled, "No grpc-status found on response.")]
    [InlineData(UnaryBody.MessageThenError, StatusCode.NotFound, "gone")]
    public async Task A_unary_response_body_is_read_to_its_end_and_checked(UnaryBody body, StatusCode expected, string detail)
    {
        // A hand-written server, so the body can be anything: the client reads a unary response
        // straight from the HTTP/2 stream, arriving in one piece or several.
        var large = new string('x', 200_000);
        await using var host = await TestHost.StartAsync(map: app => app.MapPost("/helloworld.Greeter/SayHello", async (HttpContext http) =>
        {
            http.Response.ContentType = "application/grpc";
            var reply = TestHost.Frame(new HelloReply { Message = body == UnaryBody.LargeMessageInPieces ? large : "hi" });
            var pieces = body switch
            {
                UnaryBody.OneMessage or UnaryBody.NoStatus or UnaryBody.MessageThenError => new[] { reply },
                UnaryBody.OneMessageInPieces or UnaryBody.LargeMessageInPieces => new[] { reply[..3], reply[3..7], reply[7..] },
                UnaryBody.TwoMessages => new[] { reply, reply },
                UnaryBody.TruncatedFrame => new[] { reply[..^1] },
                _ => [],
            };
            foreach (var piece in pieces)
            {
                await http.Response.Body.WriteAsync(piece);
                await http.Response.Body.FlushAsync();
            }
            if (body == UnaryBody.NoStatus) return;
            http.Response.AppendTrailer("grpc-status", body == UnaryBody.MessageThenError ? "5" : "0");
            if (body == UnaryBody.MessageThenError) http.Response.AppendTrailer("grpc-message", "gone");
        }));
        using var call = new Greeter.GreeterClient(host.Channel).SayHelloAsync(new HelloRequest());
        if (expected == StatusCode.OK)
        {
            Assert.Equal(body == UnaryBody.LargeMessageInPieces ? large : "hi", (await call).Message);
        }
        else
        {
            var ex = await Assert.ThrowsAsync<RpcException>(() => call.ResponseAsync);
            Assert.Equal(expected, ex.StatusCode);
        }
        Assert.Equal(expected, call.GetStatus().StatusCode);
        Assert.StartsWith(detail, call.GetStatus().Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Writes_after_the_server_ended_the_call_fail_with_the_servers_status()
    {
        // grpc-dotnet: a write after the call ended throws the call's status (the old runtime
        // dropped such writes silently); the read reports the same status.
        await using var host = await StartGreeterAndTestService();
        for (var i = 0; i < 20; i++)
        {
            using var call = new TestService.TestServiceClient(host.Channel).FullDuplexCall();
            await call.RequestStream.WriteAsync(new StreamingOutputCallRequest { ResponseStatus = new EchoStatus { Code = 9, Message = "no" } });
            var ex = await Assert.ThrowsAsync<RpcException>(async () => await call.ResponseStream.MoveNext());
            Assert.Equal(StatusCode.FailedPrecondition, ex.StatusCode);
            var write = await Assert.ThrowsAsync<RpcException>(() => call.RequestStream.WriteAsync(new StreamingOutputCallRequest()));
            Assert.Equal(StatusCode.FailedPrecondition, write.StatusCode);
            Assert.Equal("no", write.Status.Detail);
            Assert.Equal(StatusCode.FailedPrecondition, call.GetStatus().StatusCode);
        }
    }

    [Fact]
    public async Task Writes_after_the_caller_cancelled_throw_cancelled()
    {
        await using var host = await StartGreeterAndTestService();
        using var cts = new CancellationTokenSource();
        using var call = new TestService.TestServiceClient(host.Channel).FullDuplexCall(new CallOptions(cancellationToken: cts.Token));
        await cts.CancelAsync();
        var ex = await Assert.ThrowsAsync<RpcException>(() => call.RequestStream.WriteAsync(new StreamingOutputCallRequest()));
        Assert.Equal(StatusCode.Cancelled, ex.StatusCode);
    }

    [Fact]
    public async Task Deadlines_beyond_what_a_timer_can_hold_work_on_both_sides()
    {
        await using var host = await StartGreeterAndTestService();
        var reply = await new Greeter.GreeterClient(host.Channel).SayHelloAsync(new HelloRequest { Name = "far" }, new CallOptions().WithTimeout(TimeSpan.FromDays(60)));
        Assert.Equal("Hello far", reply.Message);
        // The largest grpc-timeout the spec allows (about 11,400 years).
        var raw = await host.PostAsync("/grpc.testing.TestService/EmptyCall", new ByteArrayContent(TestHost.Frame([])), headers: ("grpc-timeout", "99999999H"));
        Assert.Equal("0", raw.GrpcStatus);
    }

    [Fact]
    public async Task A_call_started_by_work_that_outlives_its_handler_is_not_tied_to_the_finished_call()
    {
        var probe = new Probe();
        await using var host = await TestHost.StartAsync(s => s.AddSingleton(probe).AddSingleton<ProbeService>().AddSingleton<GreeterService>(),
            a => { a.MapGrpcService<ProbeService>(); a.MapGrpcService<GreeterService>(); });
        probe.Channel = host.Channel;
        var call = new TestService.TestServiceClient(host.Channel).StreamingOutputCall(new StreamingOutputCallRequest(), new CallOptions().WithTimeout(TimeSpan.FromSeconds(10)));
        Assert.False(await call.ResponseStream.MoveNext());
        // The status reached the client, so the server has completed the call: start the work.
        probe.OuterCallOver.TrySetResult();
        var reply = await probe.Background.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("Hello later", reply);
    }

    [Fact]
    public async Task A_read_the_handler_left_running_is_stopped_before_the_call_ends()
    {
        var service = new AbandoningService();
        await using var host = await TestHost.StartAsync(s => s.AddSingleton(service), a => a.MapGrpcService<AbandoningService>());
        // Kestrel pools a finished HTTP/2 stream for the connection's next call: a read left
        // running on it made a later call fail with "Reading is already in progress", about one
        // call in a thousand (grpc/grpc-dotnet#1442). Several connections, because Kestrel resets
        // a connection (ENHANCE_YOUR_CALM) that leaves 200 streams half-closed by the server.
        for (var connection = 0; connection < 4; connection++)
        {
            using var channel = ConduitChannel.ForAddress(host.Address);
            for (var i = 0; i < 150; i++)
            {
                using var call = new TestService.TestServiceClient(channel).FullDuplexCall();
                await call.RequestStream.WriteAsync(new StreamingOutputCallRequest());
                var ex = await Assert.ThrowsAsync<RpcException>(async () => await call.ResponseStream.MoveNext());
                Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
                Assert.Equal("giving up", ex.Status.Detail);
                // The handler queued its read before it threw, and the read was over before the
                // call ended (before the trailers left), not cut by Kestrel afterwards.
                Assert.True(service.AbandonedReads.Reader.TryRead(out var abandoned));
                Assert.True(abandoned.IsCompleted, $"call {connection}/{i}: the abandoned read was still running after the call ended");
                Assert.True(abandoned.IsFaulted || abandoned.IsCanceled, "the abandoned read returned instead of failing");
            }
        }
    }

    [Fact]
    public async Task A_handler_cannot_read_its_request_stream_after_it_returned()
    {
        var service = new LateReadingService();
        await using var host = await TestHost.StartAsync(s => s.AddSingleton(service), a => a.MapGrpcService<LateReadingService>());
        using var call = new TestService.TestServiceClient(host.Channel).FullDuplexCall();
        await call.RequestStream.WriteAsync(new StreamingOutputCallRequest());
        Assert.False(await call.ResponseStream.MoveNext());
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
        var late = await service.LateRead.Task.WaitAsync(TimeSpan.FromSeconds(10));
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => late);
        Assert.Contains("after the call's handler has returned", ex.Message, StringComparison.Ordinal);
        // The connection's next call is unharmed.
        using var next = new TestService.TestServiceClient(host.Channel).FullDuplexCall();
        await next.RequestStream.WriteAsync(new StreamingOutputCallRequest());
        Assert.False(await next.ResponseStream.MoveNext());
    }

    /// <summary>Keeps the request stream, returns, then reads it once the call is over.</summary>
    public sealed class LateReadingService : TestService.TestServiceBase
    {
        public TaskCompletionSource<Task<bool>> LateRead { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override async Task FullDuplexCall(IAsyncStreamReader<StreamingOutputCallRequest> requestStream, IServerStreamWriter<StreamingOutputCallResponse> responseStream, ServerCallContext context)
        {
            Assert.True(await requestStream.MoveNext());
            var callEnded = context.GetHttpContext().Response;
            callEnded.OnCompleted(() =>
            {
                LateRead.TrySetResult(requestStream.MoveNext());
                return Task.CompletedTask;
            });
        }
    }

    /// <summary>Starts a read in the background, then fails without waiting for it.</summary>
    public sealed class AbandoningService : TestService.TestServiceBase
    {
        public System.Threading.Channels.Channel<Task<bool>> AbandonedReads { get; } = System.Threading.Channels.Channel.CreateUnbounded<Task<bool>>();

        public override async Task FullDuplexCall(IAsyncStreamReader<StreamingOutputCallRequest> requestStream, IServerStreamWriter<StreamingOutputCallResponse> responseStream, ServerCallContext context)
        {
            Assert.True(await requestStream.MoveNext());
            Assert.True(AbandonedReads.Writer.TryWrite(requestStream.MoveNext()));
            throw new RpcException(new Status(StatusCode.ResourceExhausted, "giving up"));
        }
    }

    private static Task<TestHost> StartGreeterAndTestService() => TestHost.StartAsync(
        s => s.AddSingleton<GreeterService>().AddSingleton<TestServiceImpl>(),
        a =>
        {
            a.MapGrpcService<GreeterService>();
            a.MapGrpcService<TestServiceImpl>();
        });

    public sealed class Probe
    {
        public TaskCompletionSource<bool> HandlerCancelled { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource<bool> HandlerWaiting { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource<DateTime> InnerDeadline { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public GrpcChannel? Channel { get; set; }

        public TaskCompletionSource<string> Background { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource OuterCallOver { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource<StatusCode> InnerStatus { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>A TestService that reports what its handlers saw.</summary>
    public sealed class ProbeService(Probe probe) : TestService.TestServiceBase
    {
        /// <summary>
        /// grpc-dotnet has no ambient propagation and no ContextPropagationToken (its server throws
        /// NotImplementedException): a handler hands its deadline and cancellation on explicitly.
        /// </summary>
        private static CallOptions Propagated(ServerCallContext context) => new(deadline: context.Deadline, cancellationToken: context.CancellationToken);

        public override async Task<SimpleResponse> UnaryCall(SimpleRequest request, ServerCallContext context)
        {
            if (request.ResponseSize == -2)
            {
                // An inner call that can only end by the deadline it inherited from this call.
                try
                {
                    await new TestService.TestServiceClient(probe.Channel!).UnaryCallAsync(new SimpleRequest { ResponseSize = -1 }, Propagated(context));
                }
                catch (RpcException ex)
                {
                    probe.InnerStatus.TrySetResult(ex.StatusCode);
                    throw;
                }
            }
            if (request.ResponseSize < 0)
            {
                // Sleeps until the deadline cancels it.
                try
                {
                    probe.HandlerWaiting.TrySetResult(true);
                    await Task.Delay(Timeout.Infinite, context.CancellationToken);
                }
                finally
                {
                    probe.HandlerCancelled.TrySetResult(true);
                }
            }
            // Calls back into this server: the inner call must carry our deadline.
            await new TestService.TestServiceClient(probe.Channel!).StreamingInputCall(Propagated(context)).ResponseAsync.ContinueWith(_ => { });
            return new SimpleResponse();
        }

        public override async Task<StreamingInputCallResponse> StreamingInputCall(IAsyncStreamReader<StreamingInputCallRequest> requestStream, ServerCallContext context)
        {
            probe.InnerDeadline.TrySetResult(context.Deadline);
            await Task.CompletedTask;
            return new StreamingInputCallResponse();
        }

        public override async Task FullDuplexCall(IAsyncStreamReader<StreamingOutputCallRequest> requestStream, IServerStreamWriter<StreamingOutputCallResponse> responseStream, ServerCallContext context)
        {
            try
            {
                await foreach (var request in requestStream.ReadAllAsync(context.CancellationToken))
                {
                    await responseStream.WriteAsync(new StreamingOutputCallResponse { Payload = new Payload() });
                }
                await Task.Delay(Timeout.Infinite, context.CancellationToken);
            }
            finally
            {
                if (context.CancellationToken.IsCancellationRequested) probe.HandlerCancelled.TrySetResult(true);
            }
        }

        public override Task StreamingOutputCall(StreamingOutputCallRequest request, IServerStreamWriter<StreamingOutputCallResponse> responseStream, ServerCallContext context)
        {
            // Fire and forget: the call below starts after this handler (and its call) are over.
            _ = Task.Run(async () =>
            {
                await probe.OuterCallOver.Task;
                try
                {
                    var reply = await new Greeter.GreeterClient(probe.Channel!).SayHelloAsync(new HelloRequest { Name = "later" });
                    probe.Background.TrySetResult(reply.Message);
                }
                catch (Exception ex)
                {
                    probe.Background.TrySetException(ex);
                }
            });
            return Task.CompletedTask;
        }

        public override Task<Empty> EmptyCall(Empty request, ServerCallContext context) =>
            throw RpcException.WithDetails(StatusCode.ResourceExhausted, "slow down ☺",
                Details.RetryInfo(TimeSpan.FromSeconds(3)), Details.QuotaFailure(("tokens", "out of tokens")));
    }
}
