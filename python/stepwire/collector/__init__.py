"""The collector: gRPC services that receive batches and answer queries over a store."""
