"""Generated Python stubs for proto/apollo.proto (protobuf package ``apollo``).

Do not edit: regenerate with ``python hack/gen_proto.py`` and commit the result.
Import as ``from apollo_api.v1 import apollo_pb2, apollo_pb2_grpc``.

Generated with: grpcio-tools 1.85.1, mypy-protobuf 5.1.0
"""
