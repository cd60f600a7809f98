"""Thin adapters: KServe v2 REST (FastAPI) and gRPC (grpc.aio) over the data plane."""
