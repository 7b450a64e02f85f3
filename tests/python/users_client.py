#!/usr/bin/python3
"""A grpcio client of user.v1.UserService: each subcommand is one of the four kinds of RPC.

    users_client.py [--server 127.0.0.1:50051] create NAME=EMAIL ...   # client streaming
    users_client.py get ID                                             # unary
    users_client.py list [--page N] [--page-size S] [--page-token T]   # server streaming
    users_client.py chat --user U [--room R] MESSAGE ...               # bidirectional

Users print as "id<TAB>name<TAB>email"; `list` prints "next-page-token: T" when the server
set that trailer; `chat` prints "user: message" for each message the room delivers until it
has seen its own messages come back. On an RPC error prints "CODE: details" to stderr (and
for CreateUsers, the index of the bad request from the ErrorInfo detail) and exits 1.
"""

import argparse
import os
import queue
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conduit_protos import error_details_pb2, status_pb2, user_pb2  # noqa: E402

SERVICE = "/user.v1.UserService/"


def print_user(user):
    print("%d\t%s\t%s" % (user.id, user.name, user.email))


def create(channel, args):
    call = channel.stream_unary(
        SERVICE + "CreateUsers",
        request_serializer=user_pb2.CreateUserRequest.SerializeToString,
        response_deserializer=user_pb2.CreateUsersResponse.FromString)

    def requests():
        for pair in args.users:
            name, _, email = pair.partition("=")
            yield user_pb2.CreateUserRequest(name=name, email=email)

    metadata = [("dry-run", "true")] if args.dry_run else None
    response = call(requests(), timeout=args.timeout, metadata=metadata)
    for user in response.users:
        print_user(user)
    print("count: %d" % response.count)


def get(channel, args):
    call = channel.unary_unary(
        SERVICE + "GetUser",
        request_serializer=user_pb2.GetUserRequest.SerializeToString,
        response_deserializer=user_pb2.User.FromString)
    print_user(call(user_pb2.GetUserRequest(id=args.id), timeout=args.timeout))


def list_users(channel, args):
    call = channel.unary_stream(
        SERVICE + "ListUsers",
        request_serializer=user_pb2.ListUsersRequest.SerializeToString,
        response_deserializer=user_pb2.User.FromString)
    responses = call(user_pb2.ListUsersRequest(page=args.page, page_size=args.page_size, page_token=args.page_token),
                     timeout=args.timeout)
    for user in responses:
        print_user(user)
    for key, value in responses.trailing_metadata() or ():
        if key == "next-page-token":
            print("next-page-token: %s" % value)


def chat(channel, args):
    call = channel.stream_stream(
        SERVICE + "Chat",
        request_serializer=user_pb2.ChatMessage.SerializeToString,
        response_deserializer=user_pb2.ChatMessage.FromString)
    outgoing = queue.Queue()
    for text in args.messages:
        outgoing.put(user_pb2.ChatMessage(user=args.user, message=text))

    def requests():
        # Half-close only after our last message came back, so the room is seen live.
        while True:
            item = outgoing.get()
            if item is None:
                return
            yield item

    responses = call(requests(), timeout=args.timeout, metadata=[("room", args.room)])
    pending = len(args.messages)
    if pending == 0:
        outgoing.put(None)
    for message in responses:
        print("%s: %s" % (message.user, message.message))
        if message.user == args.user:
            pending -= 1
            if pending == 0:
                outgoing.put(None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("CONDUIT_SERVER", "127.0.0.1:50051").split("://")[-1], help="host:port (default: $CONDUIT_SERVER, else 127.0.0.1:50051)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("create")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("users", nargs="*", metavar="NAME=EMAIL")
    p.set_defaults(run=create)
    p = commands.add_parser("get")
    p.add_argument("id", type=int)
    p.set_defaults(run=get)
    p = commands.add_parser("list")
    p.add_argument("--page", type=int, default=0)
    p.add_argument("--page-size", type=int, default=0)
    p.add_argument("--page-token", default="")
    p.set_defaults(run=list_users)
    p = commands.add_parser("chat")
    p.add_argument("--user", required=True)
    p.add_argument("--room", default="lobby")
    p.add_argument("messages", nargs="*")
    p.set_defaults(run=chat)
    args = parser.parse_args()

    with grpc.insecure_channel(args.server) as channel:
        try:
            args.run(channel, args)
        except grpc.RpcError as e:
            print("%s: %s" % (e.code().name, e.details()), file=sys.stderr)
            for key, value in e.trailing_metadata() or ():
                if key == "grpc-status-details-bin":
                    print_index(value)
            return 1
    return 0


def print_index(details_bin):
    """The index of the bad request, from the google.rpc.ErrorInfo in the status details."""
    status = status_pb2.Status.FromString(details_bin)
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and "index" in info.metadata:
            print("index: %s" % info.metadata["index"], file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
