#!/usr/bin/env python3
"""Checks a gRPC server's reflection with the standard Python client (grpcio-reflection, which
speaks grpc.reflection.v1alpha), as a Python tool would discover the server.

Usage: reflection_check.py HOST:PORT EXPECTED_SERVICE...

Passes (exit 0) when the server lists exactly the expected services plus the standard ones
(health and both reflection versions), and every expected service resolves, with its methods'
request and response types, through file_containing_symbol and the files it imports. Otherwise
prints what differs and exits 1.
"""

import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

STANDARD_SERVICES = {
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


def fail(message):
    print(f"reflection_check: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv):
    if len(argv) < 3:
        fail("usage: reflection_check.py HOST:PORT EXPECTED_SERVICE...")
    addr, expected_own = argv[1], argv[2:]
    expected = set(expected_own) | STANDARD_SERVICES
    with grpc.insecure_channel(addr) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
        except grpc.FutureTimeoutError:
            fail(f"{addr}: no connection within 10 s")
        database = ProtoReflectionDescriptorDatabase(channel)
        try:
            listed = list(database.get_services())
        except grpc.RpcError as error:
            fail(f"{addr}: list_services failed: {error.code()} {error.details()}")
        if set(listed) != expected or len(set(listed)) != len(listed):
            fail(f"{addr}: list_services gave {sorted(listed)}, expected {sorted(expected)}")
        pool = DescriptorPool(database)
        for service in expected_own:
            try:
                file = database.FindFileContainingSymbol(service)
                descriptor = pool.FindServiceByName(service)
                for method in descriptor.methods:
                    # Resolved through the file's imports (e.g. the well-known types).
                    method.input_type.fields
                    method.output_type.fields
            except (KeyError, TypeError, grpc.RpcError) as error:
                fail(f"{addr}: {service} does not resolve: {error!r}")
            print(f"{addr}: {service} in {file.name}, {len(descriptor.methods)} methods")
    print(f"{addr}: lists {sorted(listed)}")


if __name__ == "__main__":
    main(sys.argv)
