"""grpcio clients generated from each seed's own proto (protos/seeds/<seed>/*.proto), unchanged.

Usage:
    seed_clients.py --server HOST:PORT grpc-with-go hello NAME
    seed_clients.py --server HOST:PORT grpc-with-go chat --user U [--room R] TEXT...
    seed_clients.py --server HOST:PORT grpc-in-production store KEY VALUE [--token T] [--field-token T] [--dry-run]
    seed_clients.py --server HOST:PORT grpc-in-production get KEY [--token T]
    seed_clients.py --server HOST:PORT grpc-in-production dump [--token T]
    seed_clients.py --server HOST:PORT grpc-in-production account TOKEN
    seed_clients.py --server HOST:PORT system-design get ID
    seed_clients.py --server HOST:PORT system-design list [--page N] [--page-size S]
    seed_clients.py --server HOST:PORT system-design create NAME=EMAIL... [--dry-run]
    seed_clients.py --server HOST:PORT system-design chat --user U [--room R] MESSAGE...

The client code (messages and stubs) is generated on every run with Debian's python3-grpc-tools
(`python3 -m grpc_tools.protoc --python_out --grpc_python_out`) from the seed's folder, with that
folder as the include root, as the seed's own user would. A failed call prints
"CODE: details" to stderr and exits 1.
"""

import argparse
import glob
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

import grpc

SEEDS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "protos", "seeds"))


def generate(seed):
    """Generates the seed's modules into a temp dir and imports them: {"greeter": (pb2, pb2_grpc), ...}."""
    folder = os.path.join(SEEDS, seed)
    protos = sorted(os.path.basename(p) for p in glob.glob(os.path.join(folder, "*.proto")))
    out = tempfile.mkdtemp(prefix="conduit_seed_")
    try:
        cmd = [sys.executable, "-m", "grpc_tools.protoc", "-I", folder,
               "--python_out=" + out, "--grpc_python_out=" + out] + protos
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError("grpc_tools.protoc failed: " + proc.stderr.strip())
        sys.path.insert(0, out)
        modules = {}
        for proto in protos:
            name = proto[:-len(".proto")]
            modules[name] = (importlib.import_module(name + "_pb2"), importlib.import_module(name + "_pb2_grpc"))
        return modules
    finally:
        shutil.rmtree(out, ignore_errors=True)


def bearer(token):
    return [("authorization", "Bearer " + token)] if token else []


def grpc_with_go(channel, args):
    m = generate("grpc-with-go")
    if args.command == "hello":
        pb2, rpc = m["greeter"]
        print(rpc.GreeterStub(channel).SayHello(pb2.HelloRequest(name=args.rest[0]), timeout=30).message)
    elif args.command == "chat":
        pb2, rpc = m["chat"]
        requests = iter([pb2.ChatMessage(user=args.user, text=t) for t in args.rest])
        metadata = [("room", args.room)] if args.room else []
        for reply in rpc.ChatStub(channel).ChatStream(requests, metadata=metadata, timeout=60):
            print("%s: %s" % (reply.user, reply.text))
    else:
        raise SystemExit("unknown command " + args.command)


def grpc_in_production(channel, args):
    pb2, rpc = generate("grpc-in-production")["app"]
    cache = rpc.CacheStub(channel)
    metadata = bearer(args.token) + ([("dry-run", "1")] if args.dry_run else [])
    if args.command == "store":
        cache.Store(pb2.StoreReq(key=args.rest[0], val=args.rest[1].encode(), account_token=args.field_token or ""),
                    metadata=metadata, timeout=30)
        print("stored")
    elif args.command == "get":
        print(cache.Get(pb2.GetReq(key=args.rest[0]), metadata=metadata, timeout=30).val.decode())
    elif args.command == "dump":
        for item in cache.Dump(pb2.DumpReq(), metadata=metadata, timeout=30).items:
            print("%s\t%s" % (item.key, item.val.decode()))
    elif args.command == "account":
        reply = rpc.AccountsStub(channel).GetByToken(pb2.GetByTokenReq(token=args.rest[0]), timeout=30)
        print("max_cache_keys: %d" % reply.account.max_cache_keys)
    else:
        raise SystemExit("unknown command " + args.command)


def system_design(channel, args):
    pb2, rpc = generate("system-design")["user"]
    users = rpc.UserServiceStub(channel)
    if args.command == "get":
        u = users.GetUser(pb2.GetUserRequest(id=int(args.rest[0])), timeout=30)
        print("%d\t%s\t%s" % (u.id, u.name, u.email))
    elif args.command == "list":
        for u in users.ListUsers(pb2.ListUsersRequest(page=args.page, page_size=args.page_size), timeout=30):
            print("%d\t%s\t%s" % (u.id, u.name, u.email))
            sys.stdout.flush()
    elif args.command == "create":
        requests = iter([pb2.CreateUserRequest(name=p.split("=", 1)[0], email=p.split("=", 1)[1]) for p in args.rest])
        metadata = [("dry-run", "true")] if args.dry_run else []
        reply = users.CreateUsers(requests, metadata=metadata, timeout=30)
        for u in reply.users:
            print("%d\t%s\t%s" % (u.id, u.name, u.email))
        print("count: %d" % reply.count)
    elif args.command == "chat":
        requests = iter([pb2.ChatMessage(user=args.user, message=t) for t in args.rest])
        metadata = [("room", args.room)] if args.room else []
        for reply in users.Chat(requests, metadata=metadata, timeout=60):
            print("%s: %s" % (reply.user, reply.message))
    else:
        raise SystemExit("unknown command " + args.command)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("seed", choices=["grpc-with-go", "grpc-in-production", "system-design"])
    parser.add_argument("command")
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--user", default="")
    parser.add_argument("--room", default="")
    parser.add_argument("--token", default="")
    parser.add_argument("--field-token", default="")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--page", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=0)
    args = parser.parse_intermixed_args()
    run = {"grpc-with-go": grpc_with_go, "grpc-in-production": grpc_in_production, "system-design": system_design}[args.seed]
    with grpc.insecure_channel(args.server) as channel:
        try:
            run(channel, args)
        except grpc.RpcError as e:
            sys.stdout.flush()
            print("%s: %s" % (e.code().name, e.details()), file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
