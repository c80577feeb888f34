"""Transport settings shared by clients and the collector (kept apart so that clients need not import the
collector's store)."""

MAX_MESSAGE_BYTES = 64 << 20
"""Largest gRPC message either end accepts; clients seal batches far below it (1 to 16 MiB)."""

GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]

ADDRESS_FILE = "collector.json"
"""Where a data directory's collector writes its address and pid."""
