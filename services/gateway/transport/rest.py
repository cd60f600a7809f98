"""HTTP: the KServe v2 REST routes (inference passed to the model server's REST route as its own
bytes, the others over gRPC), the friendly `POST /v1/models/{name}:predict`, and the admin routes.
Errors go through the one status table.

Headers: `Authorization: Bearer <key>` (or `X-API-Key`), `X-Flywheel-Sticky-Key` (pins a caller
to one side of a canary split), `X-Flywheel-Timeout-Ms` (a shorter deadline than the gateway's),
`X-Flywheel-Synthetic: true` (load-test traffic: logged as synthetic, left out of drift and training data).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from services.gateway.auth import Guard, presented_key
from services.gateway.dataplane import Gateway
from services.gateway.errors import GatewayError, InvalidInput, RequestTooLarge
from services.gateway.routing import Route
from services.gateway.transport.observe import observe
from services.gateway.transport.rest_infer import (
    V2Infer,
    error_reply,
    infer_route,
    synthetic_from_header,
    timeout_from_header,
)
from services.gateway.transport.status import status_of
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.oip.asgi import InferRoute
from services.telemetry import Readiness, health_router

log = logging.getLogger(__name__)

EXAMPLE_FEATURES = [0.0] * 20 + [0.75, 1.0, 0.75] + [0.0] * 41
EXAMPLE_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAIklEQVR4nG3KsQ0AAAjDMIv/f+ppMLE1oxVq2YCFeZ0+"
    "wwGhDQOBbNsR3gAAAABJRU5ErkJggg=="
)
PREDICT_EXAMPLES = {
    "features": {
        "summary": "64 numbers in [0, 1] (an 8×8 image, row-major)",
        "value": {"instances": [EXAMPLE_FEATURES]},
    },
    "png": {
        "summary": "an 8×8 greyscale PNG, base64",
        "value": {"instances": [{"b64": EXAMPLE_PNG}]},
    },
}
INFER_EXAMPLE = {
    "id": "req-1",
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64], "data": EXAMPLE_FEATURES}],
    "outputs": [{"name": "probabilities"}],
}


class Prediction(BaseModel):
    label: str = Field(examples=["7"])
    class_: int = Field(alias="class", examples=[7])
    probabilities: dict[str, float] = Field(examples=[{"0": 0.01, "7": 0.93}])


class PredictResponse(BaseModel):
    id: str
    model: str = Field(examples=["digits"])
    model_version: str = Field(examples=["3"])
    predictions: list[Prediction]


class RouteBody(BaseModel):
    production: str = Field("", description="version serving production traffic ('' = model server default)")
    canary: str = Field("", description="canary version ('' = none)")
    canary_weight: float = Field(0.0, ge=0, le=1, description="share of traffic to the canary")
    shadow: str = Field("", description="version receiving a mirror of each request; answers only logged")

    model_config = {"json_schema_extra": {"examples": [{"production": "1", "canary": "2", "canary_weight": 0.1}]}}


def _timeout_s(request: Request) -> float | None:
    return timeout_from_header(request.headers.get("x-flywheel-timeout-ms"))


def _http_status(exc: GatewayError) -> str:
    return str(status_of(exc)[0])


def build_asgi(gateway: Gateway, guard: Guard, readiness: Readiness, max_request_bytes: int) -> InferRoute:
    """The gateway's HTTP application: the v2 inference route ahead of the FastAPI app."""
    v2_infer = V2Infer(gateway, guard)
    return infer_route(build_app(gateway, guard, readiness, max_request_bytes, v2_infer), v2_infer, max_request_bytes)


def build_app(
    gateway: Gateway, guard: Guard, readiness: Readiness, max_request_bytes: int, v2_infer: V2Infer
) -> FastAPI:
    app = FastAPI(
        title="Flywheel gateway",
        description="The public entry for predictions: KServe v2 / Open Inference Protocol REST, a friendly "
        "`:predict` route, API keys with scopes and rate limits, canary and shadow routing.",
        version="1.0",
    )
    app.include_router(health_router(readiness))

    @app.exception_handler(GatewayError)
    async def domain_error(request: Request, exc: GatewayError) -> Response:
        status, headers, body = error_reply(exc)
        return Response(body, status_code=status, headers=headers, media_type="application/json")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"error": "invalid request", "detail": json.loads(json.dumps(exc.errors(), default=str))}, 400
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    async def admit(request: Request, scope: str) -> str:
        key = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
        return (await guard.admit(key, scope)).key_id

    async def body_bytes(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_request_bytes:
            raise RequestTooLarge(f"body of {length} bytes is over the limit of {max_request_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_request_bytes:
                raise RequestTooLarge(f"body is over the limit of {max_request_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def body_json(request: Request) -> Any:
        raw = await body_bytes(request)
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"body is not valid JSON: {exc}") from None

    # -- health passthrough (open, like the probes) ------------------------------------------
    @app.get("/v2/health/live", tags=["v2"], summary="The model server is live")
    async def live() -> Response:
        r = await gateway.backend.passthrough("ServerLive", pb.ServerLiveRequest(), gateway.deadline(None))
        return Response(status_code=200 if r.live else 503)

    @app.get("/v2/health/ready", tags=["v2"], summary="The model server is ready")
    async def ready() -> Response:
        r = await gateway.backend.passthrough("ServerReady", pb.ServerReadyRequest(), gateway.deadline(None))
        return Response(status_code=200 if r.ready else 503)

    # -- v2 metadata (predict scope) ----------------------------------------------------------
    @app.get("/v2", tags=["v2"], summary="Server metadata")
    async def server_metadata(request: Request) -> dict[str, Any]:
        await admit(request, "predict")
        r = await gateway.backend.passthrough("ServerMetadata", pb.ServerMetadataRequest(), gateway.deadline(None))
        return json_format.MessageToDict(r, preserving_proto_field_name=True)

    @app.get("/v2/models/{name}/versions/{version}", tags=["v2"], summary="Model metadata")
    @app.get("/v2/models/{name}", tags=["v2"], summary="Model metadata")
    async def model_metadata(name: str, request: Request, version: str = "") -> dict[str, Any]:
        await admit(request, "predict")
        r = await gateway.backend.passthrough(
            "ModelMetadata", pb.ModelMetadataRequest(name=name, version=version), gateway.deadline(None)
        )
        return json_format.MessageToDict(r, preserving_proto_field_name=True)

    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["v2"], summary="Model readiness")
    @app.get("/v2/models/{name}/ready", tags=["v2"], summary="Model readiness")
    async def model_ready(name: str, request: Request, version: str = "") -> Response:
        await admit(request, "predict")
        r = await gateway.backend.passthrough(
            "ModelReady", pb.ModelReadyRequest(name=name, version=version), gateway.deadline(None)
        )
        return Response(status_code=200 if r.ready else 400)

    @app.get("/v2/models/{name}/versions/{version}/config", tags=["v2"], summary="Model configuration")
    @app.get("/v2/models/{name}/config", tags=["v2"], summary="Model configuration")
    async def model_config(name: str, request: Request, version: str = "") -> dict[str, Any]:
        await admit(request, "predict")
        r = await gateway.backend.passthrough(
            "ModelConfig", pb.ModelConfigRequest(name=name, version=version), gateway.deadline(None)
        )
        return json_format.MessageToDict(r, preserving_proto_field_name=True)

    # -- inference ---------------------------------------------------------------------------
    infer_openapi = {
        "requestBody": {"content": {"application/json": {"schema": {"type": "object"}, "example": INFER_EXAMPLE}}}
    }

    @app.post("/v2/models/{name}/versions/{version}/infer", tags=["v2"], openapi_extra=infer_openapi)
    @app.post("/v2/models/{name}/infer", tags=["v2"], summary="KServe v2 inference", openapi_extra=infer_openapi)
    async def infer(name: str, request: Request, version: str = "") -> Response:
        """JSON tensors, or Triton's binary extension (`Inference-Header-Content-Length`), gzip/deflate
        allowed: passed to the model server as they are, which validates them as for a direct caller.
        (Served by `infer_route` ahead of FastAPI; this is the same handler, declared for the docs.)"""
        result = await v2_infer(name, version, request.headers, await body_bytes(request))

        async def after() -> None:
            gateway.after_rest(result)

        return Response(result.answer.body, headers=V2Infer.reply_headers(result), background=BackgroundTask(after))

    @app.post(
        "/v1/models/{name}:predict",
        tags=["predict"],
        summary="Predict labels from application instances",
        description='Each instance is an 8×8 image as base64 PNG (a string or `{"b64": …}`) or 64 numbers '
        "in [0, 1]. The model's `flywheel.json` names its preprocessing and labels.",
        response_model=PredictResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["instances"],
                            "properties": {"instances": {"type": "array", "items": {}}},
                        },
                        "examples": PREDICT_EXAMPLES,
                    }
                },
            }
        },
    )
    async def predict(name: str, request: Request) -> dict[str, Any]:
        with observe("v1_predict", name, _http_status, "200") as ob:
            key_id = await admit(request, "predict")
            deadline = gateway.deadline(_timeout_s(request))
            body = await body_json(request)
            if not isinstance(body, dict) or "instances" not in body:
                raise InvalidInput("body must be a JSON object with 'instances'")
            result = await gateway.predict(
                name,
                body["instances"],
                key_id,
                deadline,
                request.headers.get("x-flywheel-sticky-key"),
                str(body.get("id", "")),
                synthetic=synthetic_from_header(request.headers.get("x-flywheel-synthetic")),
            )
            ob.version = result["model_version"]
            return result

    # -- admin (admin scope, always) ---------------------------------------------------------
    @app.get("/admin/routes", tags=["admin"], summary="Every model's aliases and split")
    async def list_routes(request: Request) -> list[dict[str, object]]:
        await admit(request, "admin")
        return [r.as_dict() for r in gateway.routes.all()]

    @app.get("/admin/routes/{model}", tags=["admin"], summary="One model's aliases and split")
    async def get_route(model: str, request: Request) -> dict[str, object]:
        await admit(request, "admin")
        r = gateway.routes.get(model)
        return (r or Route(model)).as_dict()

    @app.put("/admin/routes/{model}", tags=["admin"], summary="Set a model's aliases, canary weight and shadow")
    async def put_route(model: str, request: Request) -> dict[str, object]:
        await admit(request, "admin")
        body = RouteBody.model_validate(await body_json(request))
        return gateway.set_route(Route(model, body.production, body.canary, body.canary_weight, body.shadow)).as_dict()

    @app.delete("/admin/routes/{model}", tags=["admin"], summary="Forget a model's route (model server default)")
    async def delete_route(model: str, request: Request) -> Response:
        await admit(request, "admin")
        gateway.routes.remove(model)
        return Response(status_code=204)

    @app.post("/v2/repository/index", tags=["admin"], summary="Model repository index")
    async def repository_index(request: Request) -> list[dict[str, Any]]:
        await admit(request, "admin")
        body = await body_json(request)
        ready_only = bool(body.get("ready", False)) if isinstance(body, dict) else False
        r = await gateway.backend.passthrough(
            "RepositoryIndex", pb.RepositoryIndexRequest(ready=ready_only), gateway.deadline(None)
        )
        return [json_format.MessageToDict(m, preserving_proto_field_name=True) for m in r.models]

    @app.post("/v2/repository/models/{name}/load", tags=["admin"], summary="Load a model")
    async def repository_load(name: str, request: Request) -> Response:
        await admit(request, "admin")
        await gateway.backend.passthrough(
            "RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name=name), gateway.deadline(None)
        )
        return Response(status_code=200)

    @app.post("/v2/repository/models/{name}/unload", tags=["admin"], summary="Unload a model")
    async def repository_unload(name: str, request: Request) -> Response:
        await admit(request, "admin")
        await gateway.backend.passthrough(
            "RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name=name), gateway.deadline(None)
        )
        return Response(status_code=200)

    return app
