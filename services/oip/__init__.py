"""The Open Inference Protocol (KServe v2), owned here for the gateway and the model server alike.

- `datatypes.py`: datatype names ↔ numpy, raw bytes and JSON values → arrays, with clear errors;
- `messages.py`: `InferRequest` / `InferResponse`, a request and its answer with nothing of the wire left;
- `rest_codec.py`: v2 REST bodies (JSON, and Triton's binary tensor extension) ↔ those messages;
- `grpc_codec.py`: `inference.ModelInferRequest` / `ModelInferResponse` ↔ those messages;
- `asgi.py`: the v2 inference route as a bare ASGI layer in front of a service's FastAPI app;
- `errors.py`: `ProtocolError`, the one error the codecs raise.
"""
