"""The gateway's transports: REST (FastAPI) and gRPC (inference.GRPCInferenceService)."""
