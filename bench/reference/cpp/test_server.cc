// grpc.testing.TestService on the C++ gRPC library (Debian's libgrpc++ 1.51, callback API): the
// reference for bench/compare-streaming.sh. Usage: test_server PORT
//
// Implements EmptyCall, UnaryCall (response_size, response_status), StreamingOutputCall and
// FullDuplexCall (one response per entry of response_parameters, of its size; response_status).
// interval_us and compression are ignored; the other methods answer UNIMPLEMENTED.
//
// Reactor rules kept here (grpcpp/support/server_callback.h): each reactor deletes itself in
// OnDone; at most one read and one write outstanding (these reactors keep exactly one operation,
// read or write, in flight at a time, so reactions never share state and OnCancel has nothing to
// do: a cancelled call fails the outstanding operation with ok == false, which finishes the call);
// Finish exactly once, also for a cancelled call; the request, response and message buffers stay
// untouched while an operation on them is outstanding.
//
// SIGINT/SIGTERM shut the server down and main returns, so leak checkers see a clean exit.
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "grpc/testing/test.grpc.pb.h"

using grpc::testing::Empty;
using grpc::testing::EchoStatus;
using grpc::testing::SimpleRequest;
using grpc::testing::SimpleResponse;
using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;

namespace {

grpc::Status StatusOf(const EchoStatus& status) {
  return status.code() == 0 ? grpc::Status::OK
                            : grpc::Status(static_cast<grpc::StatusCode>(status.code()), status.message());
}

// StreamingOutputCall: one write per response parameter, then the status.
class StreamingOutputReactor final : public grpc::ServerWriteReactor<StreamingOutputCallResponse> {
 public:
  // The request is owned by the library and stays valid until after OnDone.
  explicit StreamingOutputReactor(const StreamingOutputCallRequest* request) : request_(request) { NextWrite(); }

  void OnWriteDone(bool ok) override {
    if (!ok) {  // cancelled or the stream broke: nothing more can be sent, but Finish is still owed
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
      return;
    }
    ++next_;
    NextWrite();
  }

  void OnDone() override { delete this; }

 private:
  void NextWrite() {
    if (next_ < request_->response_parameters_size()) {
      response_.mutable_payload()->set_body(std::string(request_->response_parameters(next_).size(), '\0'));
      StartWrite(&response_);
    } else {
      Finish(StatusOf(request_->response_status()));
    }
  }

  const StreamingOutputCallRequest* request_;
  StreamingOutputCallResponse response_;
  int next_ = 0;
};

// FullDuplexCall: read a request, write its responses one after another, then read the next;
// the client's half-close finishes the call with OK.
class FullDuplexReactor final
    : public grpc::ServerBidiReactor<StreamingOutputCallRequest, StreamingOutputCallResponse> {
 public:
  FullDuplexReactor() { StartRead(&request_); }

  void OnReadDone(bool ok) override {
    if (!ok) {  // half-close (or cancellation): no write is outstanding
      Finish(grpc::Status::OK);
      return;
    }
    if (request_.response_status().code() != 0) {
      Finish(StatusOf(request_.response_status()));
      return;
    }
    next_ = 0;
    NextWrite();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
      return;
    }
    ++next_;
    NextWrite();
  }

  void OnDone() override { delete this; }

 private:
  void NextWrite() {
    if (next_ < request_.response_parameters_size()) {
      response_.mutable_payload()->set_body(std::string(request_.response_parameters(next_).size(), '\0'));
      StartWrite(&response_);
    } else {
      StartRead(&request_);  // request_ is not read again until OnReadDone
    }
  }

  StreamingOutputCallRequest request_;
  StreamingOutputCallResponse response_;
  int next_ = 0;
};

class TestService final : public grpc::testing::TestService::CallbackService {
  grpc::ServerUnaryReactor* EmptyCall(grpc::CallbackServerContext* context, const Empty*, Empty*) override {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* UnaryCall(grpc::CallbackServerContext* context, const SimpleRequest* request,
                                      SimpleResponse* response) override {
    auto* reactor = context->DefaultReactor();
    grpc::Status status = StatusOf(request->response_status());
    if (status.ok()) response->mutable_payload()->set_body(std::string(request->response_size(), '\0'));
    reactor->Finish(status);
    return reactor;
  }

  grpc::ServerWriteReactor<StreamingOutputCallResponse>* StreamingOutputCall(
      grpc::CallbackServerContext*, const StreamingOutputCallRequest* request) override {
    return new StreamingOutputReactor(request);
  }

  grpc::ServerBidiReactor<StreamingOutputCallRequest, StreamingOutputCallResponse>* FullDuplexCall(
      grpc::CallbackServerContext*) override {
    return new FullDuplexReactor();
  }
};

}  // namespace

int main(int argc, char** argv) {
  const std::string address = std::string("127.0.0.1:") + (argc > 1 ? argv[1] : "50092");
  // Block the shutdown signals before gRPC starts its threads (they inherit the mask), then wait
  // for one on this thread.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  TestService service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) return 1;
  std::cout << "cpp test server listening on " << address << std::endl;

  int received = 0;
  sigwait(&signals, &received);
  // Calls still running after a second are cancelled; Shutdown returns once every reactor is done.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server->Wait();
  return 0;
}
