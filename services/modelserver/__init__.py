"""Flywheel model server: KServe v2 over HTTP and gRPC with SLO-aware adaptive batching."""
