using Conduit.Protos.Grpc.Testing;
using Conduit.Rpc.Client;
using Conduit.Rpc.Server;
using Google.Protobuf;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Rpc.Tests;

/// <summary>
/// A client-streaming call that fails on the client (here: a message over the send limit) must
/// reach the server as an aborted request stream, never as a complete one: a server that took
/// the messages sent so far for the whole upload would act on a truncated request. (The client
/// used to half-close and then reset; the reset usually won, so this passed before the fix too,
/// 20 of 20: it pins the contract, the ordering is now by construction.)
/// </summary>
public class UploadAbortTests
{
    [Fact]
    public async Task A_call_failed_by_the_client_mid_upload_is_an_aborted_request_stream_on_the_server()
    {
        for (var attempt = 0; attempt < 20; attempt++)
        {
            var upload = new Upload();
            await using var host = await TestHost.StartAsync(s => s.AddSingleton(upload).AddSingleton<UploadService>(), a => a.MapRpcService<UploadService>());
            using var channel = RpcChannel.ForAddress(host.Address, new RpcChannelOptions { MaxSendMessageSize = 100 });
            using var call = new TestService.TestServiceClient(channel).StreamingInputCall();

            await call.RequestStream.WriteAsync(new StreamingInputCallRequest { Payload = new Payload { Body = ByteString.CopyFrom(new byte[10]) } });
            await upload.FirstMessage.Task.WaitAsync(TimeSpan.FromSeconds(10));
            var tooLarge = await Assert.ThrowsAsync<RpcException>(() =>
                call.RequestStream.WriteAsync(new StreamingInputCallRequest { Payload = new Payload { Body = ByteString.CopyFrom(new byte[1000]) } }));
            Assert.Equal(StatusCode.ResourceExhausted, tooLarge.StatusCode);

            Assert.Equal("aborted", await upload.Outcome.Task.WaitAsync(TimeSpan.FromSeconds(10)));
        }
    }

    public sealed class Upload
    {
        public TaskCompletionSource FirstMessage { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource<string> Outcome { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    public sealed class UploadService(Upload upload) : TestService.TestServiceBase
    {
        public override async Task<StreamingInputCallResponse> StreamingInputCall(IAsyncStreamReader<StreamingInputCallRequest> requestStream, ServerCallContext context)
        {
            var received = 0;
            try
            {
                while (await requestStream.MoveNext(context.CancellationToken))
                {
                    received++;
                    upload.FirstMessage.TrySetResult();
                }
                upload.Outcome.TrySetResult($"complete after {received} message(s)");
            }
            catch (Exception ex) when (ex is RpcException or OperationCanceledException)
            {
                upload.Outcome.TrySetResult("aborted");
                throw;
            }
            return new StreamingInputCallResponse { AggregatedPayloadSize = received };
        }
    }
}
