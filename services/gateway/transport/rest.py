"""HTTP: the KServe v2 REST routes, the friendly `POST /v1/models/{name}:predict`, and the admin routes.

Each route admits the caller's key, makes one `Gateway` call and converts its answer; errors go
through the one status table (transport/status.py). v2 inference is rest_infer.py's route.

Headers: `Authorization: Bearer <key>` (or `X-API-Key`), `X-Flywheel-Sticky-Key` (pins a caller
to one side of a canary split), `X-Flywheel-Timeout-Ms` (a shorter deadline than the gateway's),
`X-Flywheel-Synthetic: true` (load-test traffic: logged as synthetic, left out of drift and training data).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel, Field, ValidationError

from services.gateway.auth import Guard
from services.gateway.dataplane import Gateway
from services.gateway.errors import InvalidInput
from services.gateway.routing import Route
from services.gateway.transport.observe import observe
from services.gateway.transport.origin import origin_of
from services.gateway.transport.rest_infer import infer_route
from services.gateway.transport.status import ERRORS
from services.oip import asgi, rest_codec
from services.oip.asgi import InferRoute
from services.telemetry import Readiness, health_router
from services.transportkit.rest import install_error_handlers, read_json

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


def _json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def build_asgi(gateway: Gateway, guard: Guard, readiness: Readiness, max_request_bytes: int) -> InferRoute:
    """The gateway's HTTP application: the v2 inference route ahead of the FastAPI app."""
    return infer_route(build_app(gateway, guard, readiness, max_request_bytes), gateway, guard, max_request_bytes)


def build_app(gateway: Gateway, guard: Guard, readiness: Readiness, max_request_bytes: int) -> FastAPI:
    app = FastAPI(
        title="Flywheel gateway",
        description="The public entry for predictions: KServe v2 / Open Inference Protocol REST, a friendly "
        "`:predict` route, API keys with scopes and rate limits, canary and shadow routing.",
        version="1.0",
    )
    app.include_router(health_router(readiness))
    install_error_handlers(app, ERRORS, validation_status=400)
    asgi.document(
        app,
        "KServe v2 inference",
        "JSON tensors, or Triton's binary extension (`Inference-Header-Content-Length`), gzip/deflate allowed.",
        INFER_EXAMPLE,
    )

    async def admit(request: Request, scope: str) -> str:
        return await guard.admit_headers(request.headers, scope)

    async def body_json(request: Request) -> Any:
        return await read_json(request, max_request_bytes)

    # -- health passthrough (open, like the probes) ------------------------------------------
    @app.get("/v2/health/live", tags=["v2"], summary="The model server is live")
    async def live() -> Response:
        return Response(status_code=200 if await gateway.server_live() else 503)

    @app.get("/v2/health/ready", tags=["v2"], summary="The model server is ready")
    async def ready() -> Response:
        return Response(status_code=200 if await gateway.server_ready() else 503)

    # -- v2 metadata (predict scope) ----------------------------------------------------------
    @app.get("/v2", tags=["v2"], summary="Server metadata")
    async def server_metadata(request: Request) -> dict[str, Any]:
        await admit(request, "predict")
        return _json(await gateway.server_metadata())

    @app.get("/v2/models/{name}/versions/{version}", tags=["v2"], summary="Model metadata")
    @app.get("/v2/models/{name}", tags=["v2"], summary="Model metadata")
    async def model_metadata(name: str, request: Request, version: str = "") -> dict[str, Any]:
        await admit(request, "predict")
        return _json(await gateway.model_metadata(name, version))

    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["v2"], summary="Model readiness")
    @app.get("/v2/models/{name}/ready", tags=["v2"], summary="Model readiness")
    async def model_ready(name: str, request: Request, version: str = "") -> Response:
        await admit(request, "predict")
        return Response(status_code=200 if await gateway.model_ready(name, version) else 400)

    @app.get("/v2/models/{name}/versions/{version}/config", tags=["v2"], summary="Model configuration")
    @app.get("/v2/models/{name}/config", tags=["v2"], summary="Model configuration")
    async def model_config(name: str, request: Request, version: str = "") -> dict[str, Any]:
        await admit(request, "predict")
        return _json(await gateway.model_config(name, version))

    # -- the friendly route ------------------------------------------------------------------
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
        with observe("v1_predict", name, "http", gateway.knows) as observation:
            key_id = await admit(request, "predict")
            timeout_s = rest_codec.timeout_from_header(request.headers.get(rest_codec.TIMEOUT_HEADER))
            body = await body_json(request)
            if not isinstance(body, dict) or "instances" not in body:
                raise InvalidInput("body must be a JSON object with 'instances'")
            origin = origin_of(request.headers, key_id)
            result = await gateway.predict(name, body["instances"], origin, timeout_s, str(body.get("id", "")))
            observation.version = result["model_version"]
            return result

    # -- admin (admin scope, always) ---------------------------------------------------------
    @app.get("/admin/routes", tags=["admin"], summary="Every model's aliases and split")
    async def list_routes(request: Request) -> list[dict[str, object]]:
        await admit(request, "admin")
        return [r.as_dict() for r in gateway.routes()]

    @app.get("/admin/routes/{model}", tags=["admin"], summary="One model's aliases and split")
    async def get_route(model: str, request: Request) -> dict[str, object]:
        await admit(request, "admin")
        return gateway.route(model).as_dict()

    @app.put("/admin/routes/{model}", tags=["admin"], summary="Set a model's aliases, canary weight and shadow")
    async def put_route(model: str, request: Request) -> dict[str, object]:
        await admit(request, "admin")
        try:
            body = RouteBody.model_validate(await body_json(request))
        except ValidationError as exc:
            raise InvalidInput(f"route body: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}") from None
        return gateway.set_route(Route(model, body.production, body.canary, body.canary_weight, body.shadow)).as_dict()

    @app.delete("/admin/routes/{model}", tags=["admin"], summary="Forget a model's route (model server default)")
    async def delete_route(model: str, request: Request) -> Response:
        await admit(request, "admin")
        gateway.remove_route(model)
        return Response(status_code=204)

    @app.post("/v2/repository/index", tags=["admin"], summary="Model repository index")
    async def repository_index(request: Request) -> list[dict[str, Any]]:
        await admit(request, "admin")
        body = await body_json(request)
        ready_only = bool(body.get("ready", False)) if isinstance(body, dict) else False
        index = await gateway.repository_index(ready_only)
        return [_json(m) for m in index.models]

    @app.post("/v2/repository/models/{name}/load", tags=["admin"], summary="Load a model")
    async def repository_load(name: str, request: Request) -> Response:
        await admit(request, "admin")
        await gateway.repository_load(name)
        return Response(status_code=200)

    @app.post("/v2/repository/models/{name}/unload", tags=["admin"], summary="Unload a model")
    async def repository_unload(name: str, request: Request) -> Response:
        await admit(request, "admin")
        await gateway.repository_unload(name)
        return Response(status_code=200)

    return app
