using Conduit.Protos.Grpc.Testing;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Grpc.Tests;

/// <summary>
/// A client-streaming call that fails on the client (here: a message over the send limit) must
/// reach the server as an aborted request stream, never as a complete one: a server that took
/// the messages sent so far for the whole upload would act on a truncated request. grpc-dotnet
/// leaves the HTTP/2 stream open after a failed write: the server learns of it when the client
/// disposes the call (the old runtime reset the stream at once), and the handler's read fails with
/// an IOException ("The client reset the request stream"), not an RpcException.
/// </summary>
public class UploadAbortTests
{
    [Fact]
    public async Task A_call_failed_by_the_client_mid_upload_is_an_aborted_request_stream_on_the_server()
    {
        for (var attempt = 0; attempt < 20; attempt++)
        {
            var upload = new Upload();
            await using var host = await TestHost.StartAsync(s => s.AddSingleton(upload).AddSingleton<UploadService>(), a => a.MapGrpcService<UploadService>());
            using var channel = ConduitChannel.ForAddress(host.Address, o => o.MaxSendMessageSize = 100);
            using var call = new TestService.TestServiceClient(channel).StreamingInputCall();

            await call.RequestStream.WriteAsync(new StreamingInputCallRequest { Payload = new Payload { Body = ByteString.CopyFrom(new byte[10]) } });
            await upload.FirstMessage.Task.WaitAsync(TimeSpan.FromSeconds(10));
            var tooLarge = await Assert.ThrowsAsync<RpcException>(() =>
                call.RequestStream.WriteAsync(new StreamingInputCallRequest { Payload = new Payload { Body = ByteString.CopyFrom(new byte[1000]) } }));
            Assert.Equal(StatusCode.ResourceExhausted, tooLarge.StatusCode);
            call.Dispose();

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
            catch (Exception ex) when (ex is RpcException or OperationCanceledException or IOException)
            {
                upload.Outcome.TrySetResult("aborted");
                throw;
            }
            return new StreamingInputCallResponse { AggregatedPayloadSize = received };
        }
    }
}
