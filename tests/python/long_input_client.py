#!/usr/bin/python3
"""Long client input against every service, on grpcio (C-core) with its default limits.

    /usr/bin/python3 long_input_client.py --server 127.0.0.1:50051

For inputs of 5 KB, 100 KB and 1 MB (a topic name, a cache key, an account id, an email, a user
name) each call must end with the expected status, read whole by grpcio (a status that quotes
the input unbounded makes grpcio fail on metadata size, UNAVAILABLE or an empty reply), with a
short message. Prints "ok N calls" and exits 0; on a failed check exits 1.
"""

import argparse
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conduit_protos import accounts_pb2, cache_pb2, log_pb2, status_pb2, user_pb2  # noqa: E402

MAX_MESSAGE = 400


def fail(message):
    sys.exit("FAILED: " + message)  # to stderr, exit status 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="127.0.0.1:50051", help="host:port")
    args = parser.parse_args()
    calls = 0

    with grpc.insecure_channel(args.server) as channel:
        def unary(path, request, response_type):
            return channel.unary_unary(path, request_serializer=type(request).SerializeToString,
                                       response_deserializer=response_type.FromString)

        created = unary("/accounts.v1.Accounts/CreateAccount", accounts_pb2.CreateAccountReq(name="long-input"),
                        accounts_pb2.CreateAccountResp)(accounts_pb2.CreateAccountReq(name="long-input"), timeout=10)
        auth = [("authorization", "Bearer " + created.token)]

        def expect(name, code, path, request, response_type, metadata=None):
            nonlocal calls
            calls += 1
            try:
                unary(path, request, response_type)(request, timeout=20, metadata=metadata)
            except grpc.RpcError as e:
                if e.code() != code:
                    fail(f"{name}: {e.code()} ({(e.details() or '')[:200]!r}), expected {code}")
                if len(e.details() or "") > MAX_MESSAGE:
                    fail(f"{name}: a message of {len(e.details())} characters")
                trailers = dict(e.trailing_metadata() or ())
                details = trailers.get("grpc-status-details-bin")
                if details is not None:
                    status = status_pb2.Status.FromString(details)
                    if len(status.SerializeToString()) > 2 * MAX_MESSAGE + 512:
                        fail(f"{name}: status details of {len(status.SerializeToString())} bytes")
                return
            fail(f"{name}: succeeded")

        def chunks(requests):
            yield from requests

        for size in (5 * 1024, 100 * 1024, 1024 * 1024):
            text = "x" * size
            label = f"{size} bytes"
            invalid = grpc.StatusCode.INVALID_ARGUMENT
            expect(f"Log/Consume topic {label}", invalid, "/log.v1.Log/Consume",
                   log_pb2.ConsumeRequest(topic=text), log_pb2.ConsumeResponse)
            expect(f"Log/Produce topic {label}", invalid, "/log.v1.Log/Produce",
                   log_pb2.ProduceRequest(topic=text, record=log_pb2.Record(value=b"v")), log_pb2.ProduceResponse)
            expect(f"LogAdmin/DescribeTopic {label}", invalid, "/log.v1.LogAdmin/DescribeTopic",
                   log_pb2.DescribeTopicRequest(name=text), log_pb2.TopicInfo)
            expect(f"LogAdmin/CreateTopic {label}", invalid, "/log.v1.LogAdmin/CreateTopic",
                   log_pb2.CreateTopicRequest(name=text), log_pb2.TopicInfo)
            expect(f"Cache/Get key {label}", invalid, "/cache.v1.Cache/Get",
                   cache_pb2.GetReq(key=text), cache_pb2.GetResp, auth)
            expect(f"Cache/Store key {label}", invalid, "/cache.v1.Cache/Store",
                   cache_pb2.StoreReq(key=text, val=b"v"), cache_pb2.StoreResp, auth)
            expect(f"Accounts/UpdateAccount id {label}", grpc.StatusCode.NOT_FOUND, "/accounts.v1.Accounts/UpdateAccount",
                   accounts_pb2.UpdateAccountReq(id=text, name="n"), accounts_pb2.Account)
            expect(f"Accounts/CreateAccount name {label}", invalid, "/accounts.v1.Accounts/CreateAccount",
                   accounts_pb2.CreateAccountReq(name=text), accounts_pb2.CreateAccountResp)
            expect(f"UserService/GetUserByEmail {label}", invalid, "/user.v1.UserService/GetUserByEmail",
                   user_pb2.GetUserByEmailRequest(email=text + "@example.com"), user_pb2.User)
            expect(f"UserService/UpdateUser name {label}", invalid, "/user.v1.UserService/UpdateUser",
                   user_pb2.UpdateUserRequest(id=1, name=text), user_pb2.User)
            calls += 1
            try:
                channel.stream_unary("/user.v1.UserService/CreateUsers",
                                     request_serializer=user_pb2.CreateUserRequest.SerializeToString,
                                     response_deserializer=user_pb2.CreateUsersResponse.FromString)(
                    chunks([user_pb2.CreateUserRequest(name=text, email=text + "@example.com")]), timeout=20)
                fail(f"UserService/CreateUsers {label}: succeeded")
            except grpc.RpcError as e:
                if e.code() != invalid or len(e.details() or "") > MAX_MESSAGE:
                    fail(f"UserService/CreateUsers {label}: {e.code()}, a message of {len(e.details() or '')} characters")

    print(f"ok {calls} calls")


if __name__ == "__main__":
    main()
