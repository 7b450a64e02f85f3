// The streaming methods of grpc.testing.TestService on the C++ gRPC library (Debian's libgrpc++,
// sync API): the reference for bench/compare-streaming.sh. Usage: test_server PORT
#include <iostream>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "grpc/testing/test.grpc.pb.h"

using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;

class TestService final : public grpc::testing::TestService::Service {
  grpc::Status StreamingOutputCall(grpc::ServerContext*, const StreamingOutputCallRequest* request,
                                   grpc::ServerWriter<StreamingOutputCallResponse>* writer) override {
    StreamingOutputCallResponse response;
    for (const auto& parameters : request->response_parameters()) {
      response.mutable_payload()->set_body(std::string(parameters.size(), '\0'));
      if (!writer->Write(response)) break;
    }
    return grpc::Status::OK;
  }

  grpc::Status FullDuplexCall(grpc::ServerContext*,
                              grpc::ServerReaderWriter<StreamingOutputCallResponse, StreamingOutputCallRequest>* stream) override {
    StreamingOutputCallRequest request;
    StreamingOutputCallResponse response;
    while (stream->Read(&request)) {
      for (const auto& parameters : request.response_parameters()) {
        response.mutable_payload()->set_body(std::string(parameters.size(), '\0'));
        if (!stream->Write(response)) return grpc::Status::OK;
      }
    }
    return grpc::Status::OK;
  }
};

int main(int argc, char** argv) {
  const std::string address = std::string("127.0.0.1:") + (argc > 1 ? argv[1] : "50092");
  TestService service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) return 1;
  std::cout << "cpp test server listening on " << address << std::endl;
  server->Wait();
  return 0;
}
