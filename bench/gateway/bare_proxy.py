"""A bare grpc.aio proxy that forwards ModelInfer bytes untouched: the floor of any Python gRPC hop.

The benchmark runs it beside the gateway so the gateway's own cost (auth, routing, logging) can
be told apart from the cost of one more Python gRPC server + client on the path.
Run: python -m bench.gateway.bare_proxy LISTEN_ADDR TARGET_ADDR
"""

from __future__ import annotations

import asyncio
import sys

import grpc

SERVICE = "inference.GRPCInferenceService"


async def serve(listen: str, target: str) -> None:
    channel = grpc.aio.insecure_channel(target)
    forward = channel.unary_unary(f"/{SERVICE}/ModelInfer")

    async def model_infer(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        # The caller's metadata goes along: the model server admits the credential it carries.
        return await forward(raw, timeout=context.time_remaining(), metadata=context.invocation_metadata())

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(model_infer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler}),))
    server.add_insecure_port(listen)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
