"""The four gRPC services: thin servicers over the engine's view, with validation and conversions."""
