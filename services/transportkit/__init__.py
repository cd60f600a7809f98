"""What every service's `transport/` adapters share, so each keeps only its own error table and handlers.

- `errors.py`: `ErrorTable`, a service's one map from domain errors to HTTP status, gRPC code,
  retry headers and error body;
- `rest.py`: the REST boundary (FastAPI error handlers), one bounded body reader, an ASGI reply;
- `grpc.py`: the gRPC boundary (grpc.aio and thread-pool servers alike);
- `listener.py`: the HTTP listening socket with Nagle off;
- `bootstrap.py`: a service's `__main__` pieces: argument parser, event loop, uvicorn on that socket.
- `drain.py`: SIGTERM without a failed request: unready, `Connection: close`, in-flight work finished, bounded.

Nothing here imports a service or knows a protocol's messages.
"""
