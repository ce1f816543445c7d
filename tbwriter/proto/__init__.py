"""Generated protobuf modules (python tools/gen_proto.py); do not edit by hand."""
