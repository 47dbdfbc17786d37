"""Generated protobuf bindings of protos/pspc/v1/pspc.proto (scripts/gen-protos.sh)."""
