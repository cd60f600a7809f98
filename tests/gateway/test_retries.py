"""Retries and deadlines of the model-server clients against scripted servers.

The model server cannot be made to answer UNAVAILABLE or INTERNAL on cue, so these tests run a
real grpc.aio server / a real uvicorn HTTP server on 127.0.0.1 that fail as each test scripts it
(stand-ins for the model server's failure modes); the clients, connections, deadlines and breakers
are the real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import grpc
import pytest

from services.gateway.backend import ModelServerClient
from services.gateway.breaker import Breakers
from services.gateway.deadline import Deadline
from services.gateway.errors import BackendFailed, BackendUnavailable, DeadlineExceeded
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.genproto.inference import grpc_predict_v2_pb2_grpc as pb_grpc


class Scripted(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self) -> None:
        self.script: list[grpc.StatusCode | float] = []
        self.calls = 0
        self.timeouts: list[float | None] = []

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        self.calls += 1
        self.timeouts.append(context.time_remaining())
        step = self.script.pop(0) if self.script else grpc.StatusCode.OK
        if isinstance(step, float):
            await asyncio.sleep(step)
        elif step != grpc.StatusCode.OK:
            await context.abort(step, f"scripted {step.name}")
        return pb.ModelInferResponse(model_name=request.model_name, model_version="1")


REQ = pb.ModelInferRequest(model_name="m")


def _infer(client: ModelServerClient, deadline: Deadline) -> Awaitable[pb.ModelInferResponse]:
    return client.call("m", lambda stub, timeout: stub.ModelInfer(REQ, timeout=timeout), deadline)


def test_retries_only_safe_failures_within_budget() -> None:
    async def scenario() -> None:
        servicer = Scripted()
        server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        client = ModelServerClient(
            f"127.0.0.1:{port}", 2, Breakers(10, 60), retries=2, backoff_s=0.001, max_message_bytes=1 << 20
        )
        try:
            # Two UNAVAILABLE then OK: answered, after two retries.
            servicer.script = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
            resp = await _infer(client, Deadline.within(5.0))
            assert resp.model_version == "1" and servicer.calls == 3

            # Overloaded is retried too (the request was not run).
            servicer.calls = 0
            servicer.script = [grpc.StatusCode.RESOURCE_EXHAUSTED]
            await _infer(client, Deadline.within(5.0))
            assert servicer.calls == 2

            # A runtime failure is never retried.
            servicer.calls = 0
            servicer.script = [grpc.StatusCode.INTERNAL]
            with pytest.raises(BackendFailed):
                await _infer(client, Deadline.within(5.0))
            assert servicer.calls == 1

            # Retries stop at the limit.
            servicer.calls = 0
            servicer.script = [grpc.StatusCode.UNAVAILABLE] * 3
            with pytest.raises(BackendUnavailable):
                await _infer(client, Deadline.within(5.0))
            assert servicer.calls == 3

            # The remaining budget is the server's deadline; a slow answer is a 504, not retried.
            servicer.calls = 0
            servicer.timeouts.clear()
            servicer.script = [2.0]
            with pytest.raises(DeadlineExceeded):
                await _infer(client, Deadline.within(0.3))
            assert servicer.calls == 1
            assert servicer.timeouts[0] is not None and servicer.timeouts[0] < 0.5  # the budget, not a default
        finally:
            await client.close()
            await server.stop(0)

    asyncio.run(scenario())
