"""grpc.health.v1.Health from grpcio: Check each service named, then the first Watch answer for
the first and the last one. Prints one line per answer, e.g. "check 'log.v1.Log': SERVING" or
"check 'x': NOT_FOUND" (the status code of a failed call).

Usage: health_client.py --server HOST:PORT SERVICE...

Debian's python3-grpcio has no grpc_health package, and there is no health.proto in this
repository to compile: the two messages are declared here with descriptor_pb2 (the same
definitions as grpc/grpc's src/proto/grpc/health/v1/health.proto), and the calls made with
grpcio's generic API.
"""

import argparse
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def _messages():
    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="conduit_test/health.proto", package="grpc.health.v1", syntax="proto3")
    request = file.message_type.add(name="HealthCheckRequest")
    request.field.add(name="service", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    response = file.message_type.add(name="HealthCheckResponse")
    status = response.enum_type.add(name="ServingStatus")
    for number, name in enumerate(["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]):
        status.value.add(name=name, number=number)
    response.field.add(name="status", number=1, type=F.TYPE_ENUM, label=F.LABEL_OPTIONAL,
                       type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    factory = message_factory.MessageFactory(pool)
    find = pool.FindMessageTypeByName
    get = getattr(message_factory, "GetMessageClass", None) or factory.GetPrototype
    return get(find("grpc.health.v1.HealthCheckRequest")), get(find("grpc.health.v1.HealthCheckResponse"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("services", nargs="+")
    args = parser.parse_args()
    Request, Response = _messages()
    name = Response.DESCRIPTOR.enum_types_by_name["ServingStatus"].values_by_number
    with grpc.insecure_channel(args.server) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=Request.SerializeToString,
                                    response_deserializer=Response.FromString)
        watch = channel.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=Request.SerializeToString,
                                     response_deserializer=Response.FromString)
        for service in args.services:
            try:
                answer = name[check(Request(service=service), timeout=10).status].name
            except grpc.RpcError as error:
                answer = error.code().name
            print(f"check '{service}': {answer}")
        for service in [args.services[0], args.services[-1]]:
            stream = watch(Request(service=service), timeout=10)
            print(f"watch '{service}': {name[next(stream).status].name}")
            stream.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(main())
