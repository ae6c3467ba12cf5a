"""Generated protobuf messages of the Open Inference Protocol (see generate.py)."""
