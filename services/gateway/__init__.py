"""The gateway: the public HTTP and gRPC entry for predictions (auth, routing, canary, logging)."""
