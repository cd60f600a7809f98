"""The gateway's data plane: one path for every prediction, whichever transport brought it.

`infer` takes a decoded v2 request (services/oip), checks the names that will travel on, routes
it (production, canary, shadow), calls the model server, judges a canary by the outcome, and
after the answer logs the prediction and mirrors it to a shadow, from the arrays it already
has. `predict` turns application instances into such a request (preprocessing per the model's
flywheel.json) and takes the same path. The metadata, readiness and repository calls and the
route admin are here too, so the transports call nothing else.

Typed in, typed out: the protocol's messages, domain errors, no HTTP or gRPC server types.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.gateway.deadline import Deadline
from services.gateway.errors import (
    BackendFailed,
    BackendUnavailable,
    DeadlineExceeded,
    GatewayError,
    InvalidInput,
    ModelNotFound,
    RequestTooLarge,
)
from services.gateway.instances import UrlReader, encode_instances, predictions
from services.gateway.metrics import ROLLBACKS, ROUTED, SHADOW
from services.gateway.model_cards import ModelCards
from services.gateway.modelserver_client import ModelServerClient
from services.gateway.prediction_log import LogEntry, PredictionLogger
from services.gateway.rollback import CanaryWatch, Verdict
from services.gateway.routing import CANARY, Choice, Route, RouteTable
from services.gateway.routing import SHADOW as SHADOW_ROUTE
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.oip.messages import InferRequest, InferResponse
from services.telemetry import REQUEST_ID, request_id_var

log = logging.getLogger(__name__)

# Failures that are the backend's fault, so they count against a canary.
CANARY_FAULTS = (BackendFailed, BackendUnavailable, DeadlineExceeded)
# What may name a model or a request on its way on (into paths, headers, logs and events).
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    """Unique across processes (a random prefix per process) without a syscall per request."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def check_model(name: str) -> str:
    if not name:
        raise InvalidInput("model_name is required")
    if not MODEL_NAME.fullmatch(name):
        raise InvalidInput(f"model name {name[:64]!r} must be 1-128 letters, digits, '_', '.' or '-'")
    return name


def check_version(version: str) -> str:
    if version and not (version.isascii() and version.isdigit()):
        raise InvalidInput(f"model_version must be a number, got {version[:64]!r}")
    return version


def check_request_id(request_id: str) -> str:
    """A caller's request id travels on in a header and into logs: a short, plain token or nothing."""
    if request_id and not REQUEST_ID.fullmatch(request_id):
        raise InvalidInput(f"request id {request_id[:64]!r} must be 1-128 letters, digits or any of _ . : / @ + = ~ -")
    return request_id


class KnownModels:
    """Names the model server has answered a prediction for: the only model names that may become metric
    labels (a caller's name otherwise mints a new time series per request). Bounded all the same."""

    def __init__(self, limit: int = 1000) -> None:
        self._names: set[str] = set()
        self._limit = limit

    def add(self, name: str) -> None:
        if name not in self._names and len(self._names) < self._limit:
            self._names.add(name)

    def __contains__(self, name: str) -> bool:
        return name in self._names


@dataclass(frozen=True)
class Origin:
    """Who sent a request and how to treat it: what the adapters read from headers or gRPC metadata."""

    key_id: str  # the admitted API key's id ("" when keys are not required and none was given)
    sticky_key: str | None = None  # pins the caller to one side of a canary split
    request_id: str = ""  # names the request when it has no id of its own (X-Request-Id)
    synthetic: bool = False  # load-test traffic: logged as such, left out of drift and training data


@dataclass(frozen=True)
class Limits:
    deadline_s: float
    max_instances: int
    log_max_features: int
    max_request_pixels: int = 1 << 22  # pixels the images of one :predict request may decode in all


@dataclass(frozen=True)
class Answer:
    response: InferResponse
    route: str  # production or canary
    request_id: str  # the caller's, or one made here


class Gateway:
    def __init__(
        self,
        client: ModelServerClient,
        routes: RouteTable,
        watch: CanaryWatch,
        cards: ModelCards,
        logger: PredictionLogger,
        limits: Limits,
        on_rollback: Callable[[Verdict], None] | None = None,
        read_url: UrlReader | None = None,
    ) -> None:
        """`on_rollback`: told of each canary taken out of traffic (the Kafka adapter publishes it);
        `read_url`: fetches `:predict` instances given by URL (allow-listed, bounded), None: no URLs."""
        self._read_url = read_url
        self._client = client
        self._routes = routes
        self._cards = cards
        self._watch = watch
        self._logger = logger
        self._on_rollback = on_rollback
        self._limits = limits
        self._shadows: set[asyncio.Task[None]] = set()
        self._known = KnownModels()

    def knows(self, model: str) -> bool:
        """Whether the model server has answered for `model` (so it may name a metric's label)."""
        return model in self._known

    def deadline(self, client_s: float | None = None) -> Deadline:
        return Deadline.within(self._limits.deadline_s, client_s)

    # -- inference ---------------------------------------------------------------------------
    async def infer(self, request: InferRequest, origin: Origin) -> Answer:
        """One v2 inference. `request.timeout_s` (the caller's deadline) bounds the gateway's."""
        check_model(request.model)
        check_version(request.version)
        if not request.inputs:
            raise InvalidInput("the request has no inputs")
        request_id = check_request_id(request.id) or check_request_id(origin.request_id) or new_request_id()
        choice = self._routes.choose(request.model, request.version, origin.sticky_key)
        return await self._forward(request, choice, origin, self.deadline(request.timeout_s), request_id)

    async def predict(
        self, model: str, instances: Any, origin: Origin, timeout_s: float | None, request_id: str
    ) -> dict[str, Any]:
        """The friendly route: instances → features (per flywheel.json) → infer → labels and probabilities.
        `request_id`: the body's `id`, else the origin's, else one made here."""
        check_model(model)
        request_id = check_request_id(request_id) or check_request_id(origin.request_id) or new_request_id()
        if not isinstance(instances, list) or not instances:
            raise InvalidInput("'instances' must be a non-empty list")
        if len(instances) > self._limits.max_instances:
            raise RequestTooLarge(f"{len(instances)} instances; the limit is {self._limits.max_instances}")
        deadline = self.deadline(timeout_s)
        choice = self._routes.choose(model, "", origin.sticky_key)
        version = choice.version or await asyncio.to_thread(self._cards.latest_version, model)
        card = self._cards.get(model, version)
        # Decoding images is CPU work: off the event loop, so other requests keep flowing.
        pixels = self._limits.max_request_pixels
        batch = await asyncio.to_thread(encode_instances, card, instances, self._read_url, pixels)
        request = InferRequest(model=model, version=version, inputs={card.input: batch.inputs}, outputs=[card.output])
        answer = await self._forward(
            request, Choice(version, choice.route, choice.shadow), origin, deadline, request_id, batch.features
        )
        scores = answer.response.outputs.get(card.output)
        if scores is None:
            raise BackendFailed(f"the model server's answer has no {card.output!r} output")
        return {
            "id": answer.request_id,
            "model": model,
            "model_version": answer.response.version,
            "predictions": predictions(card, scores),
        }

    async def _forward(
        self,
        request: InferRequest,
        choice: Choice,
        origin: Origin,
        deadline: Deadline,
        request_id: str,
        features: np.ndarray | None = None,
    ) -> Answer:
        """`features`: what to log for drift (the friendly route has them); else derived from the inputs."""
        request_id_var.set(request_id)
        request.version = choice.version  # the request is ours once decoded: routed in place
        started = time.perf_counter()
        try:
            response = await self._client.infer(request, request_id, deadline)
        except GatewayError as exc:
            if choice.route == CANARY and _backend_fault(exc):
                self._judge(request.model, choice.version, False, time.perf_counter() - started)
            raise
        latency = time.perf_counter() - started
        self._known.add(request.model)
        if choice.route == CANARY:
            self._judge(request.model, choice.version, True, latency)
        ROUTED.labels(request.model, choice.route).inc()
        # Logged and mirrored once the caller's answer is on its way: neither adds to its latency.
        asyncio.get_running_loop().call_soon(
            self._after, request, response, request_id, choice, origin, latency, features
        )
        return Answer(response, choice.route, request_id)

    def _after(
        self,
        request: InferRequest,
        response: InferResponse,
        request_id: str,
        choice: Choice,
        origin: Origin,
        latency_s: float,
        features: np.ndarray | None = None,
    ) -> None:
        version = response.version or request.version
        if features is None:
            features = self._monitored(request, version)
        self._log(request_id, request.model, version, features, _scores(response), origin, choice.route, latency_s)
        if choice.shadow and choice.shadow != version:
            shadow = dataclasses.replace(request, version=choice.shadow)
            self._spawn(self._shadow(shadow, request_id, features, origin))

    def _monitored(self, request: InferRequest, version: str) -> np.ndarray | None:
        """The features the monitor tests for a v2 request: the project's (pixels, codes, an image
        signature) computed from the model input, as the friendly route logs them; a version without
        a project spec logs its first floating-point input; a text model's inputs (hashed counts) none."""
        try:
            card = self._cards.get(request.model, version) if version else None
        except ModelNotFound:
            card = None
        if card is None or card.codec is None:
            return _first_float(request)
        x = request.inputs.get(card.input)
        codec = card.codec
        if x is None or codec.kind == "text" or tuple(x.shape[1:]) != codec.shape:
            return None
        return codec.features_of(x)

    # -- canary ------------------------------------------------------------------------------
    def _judge(self, model: str, version: str, ok: bool, latency_s: float) -> None:
        verdict = self._watch.record(model, version, ok, latency_s)
        if verdict is not None:
            self.rollback(verdict)

    def rollback(self, verdict: Verdict) -> bool:
        """Take a failing canary out of traffic, count it, and tell `on_rollback` (it is published as archived)."""
        route = self._routes.get(verdict.model)
        self._watch.forget(verdict.model, verdict.version)
        if route is None or route.canary != verdict.version:
            return False
        self._routes.update(verdict.model, canary="", canary_weight=0.0)
        ROLLBACKS.labels(verdict.model, verdict.reason).inc()
        log.warning(
            "canary rolled back",
            extra={
                "model": verdict.model,
                "version": verdict.version,
                "reason": verdict.reason,
                "detail": verdict.detail,
            },
        )
        if self._on_rollback is not None:
            self._on_rollback(verdict)
        return True

    # -- shadow ------------------------------------------------------------------------------
    def _spawn(self, shadow: Awaitable[None]) -> None:
        task = asyncio.ensure_future(shadow)
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(
        self, request: InferRequest, request_id: str, features: np.ndarray | None, origin: Origin
    ) -> None:
        started = time.perf_counter()
        try:
            response = await self._client.infer(request, request_id, self.deadline())
        except GatewayError as exc:
            SHADOW.labels(request.model, "error").inc()
            log.info(
                "shadow request failed",
                extra={"model": request.model, "version": request.version, "error": exc.message},
            )
            return
        SHADOW.labels(request.model, "ok").inc()
        latency = time.perf_counter() - started
        self._log(
            request_id, request.model, request.version, features, _scores(response), origin, SHADOW_ROUTE, latency
        )

    async def drain(self, timeout_s: float) -> None:
        if self._shadows:
            await asyncio.wait(list(self._shadows), timeout=timeout_s)

    # -- prediction logs ---------------------------------------------------------------------
    def _log(
        self,
        request_id: str,
        model: str,
        version: str,
        features: np.ndarray | None,
        scores: np.ndarray | None,
        origin: Origin,
        route: str,
        latency_s: float,
    ) -> None:
        labels = self._cards.labels(model, version) if version else ()
        rows = scores.shape[0] if scores is not None and scores.ndim >= 1 else 1
        if features is not None and (features.ndim < 1 or features.shape[0] != rows):
            features = None
        per_row = features[0].size if features is not None and rows else 0
        if per_row > self._limits.log_max_features:
            features = None
        latency_ms = latency_s * 1000
        for i in range(rows):
            self._logger.submit(
                LogEntry(
                    request_id=request_id if rows == 1 else f"{request_id}/{i}",
                    model=model,
                    version=version,
                    features=features[i] if features is not None else None,
                    scores=scores[i] if scores is not None and scores.ndim >= 1 else None,
                    labels=labels,
                    latency_ms=latency_ms,
                    key_id=origin.key_id,
                    route=route,
                    synthetic=origin.synthetic,
                )
            )

    # -- health, metadata, repository ----------------------------------------------------------
    async def server_live(self, timeout_s: float | None = None) -> bool:
        return await self._client.server_live(self.deadline(timeout_s))

    async def server_ready(self, timeout_s: float | None = None) -> bool:
        return await self._client.server_ready(self.deadline(timeout_s))

    async def server_metadata(self, timeout_s: float | None = None) -> pb.ServerMetadataResponse:
        return await self._client.server_metadata(self.deadline(timeout_s))

    async def model_ready(self, name: str, version: str, timeout_s: float | None = None) -> bool:
        return await self._client.model_ready(check_model(name), check_version(version), self.deadline(timeout_s))

    async def model_metadata(self, name: str, version: str, timeout_s: float | None = None) -> pb.ModelMetadataResponse:
        name, version = check_model(name), check_version(version)
        return await self._client.model_metadata(name, version, self.deadline(timeout_s))

    async def model_config(self, name: str, version: str, timeout_s: float | None = None) -> pb.ModelConfigResponse:
        name, version = check_model(name), check_version(version)
        return await self._client.model_config(name, version, self.deadline(timeout_s))

    async def model_statistics(
        self, name: str, version: str, timeout_s: float | None = None
    ) -> pb.ModelStatisticsResponse:
        name = check_model(name) if name else ""
        return await self._client.model_statistics(name, check_version(version), self.deadline(timeout_s))

    async def repository_index(self, ready_only: bool, timeout_s: float | None = None) -> pb.RepositoryIndexResponse:
        return await self._client.repository_index(ready_only, self.deadline(timeout_s))

    async def repository_load(self, name: str, timeout_s: float | None = None) -> None:
        await self._client.repository_load(check_model(name), self.deadline(timeout_s))

    async def repository_unload(self, name: str, timeout_s: float | None = None) -> None:
        await self._client.repository_unload(check_model(name), self.deadline(timeout_s))

    # -- routes (admin) ------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return self._routes.all()

    def route(self, model: str) -> Route:
        return self._routes.get(model) or Route(model)

    def set_route(self, route: Route) -> Route:
        old = self._routes.get(route.model)
        if old is not None and old.canary and old.canary != route.canary:
            self._watch.forget(route.model, old.canary)
        return self._routes.put(route)

    def remove_route(self, model: str) -> None:
        self._routes.remove(model)


def _backend_fault(exc: GatewayError) -> bool:
    """Whether a failure is the backend's, so it counts against a canary: never a caller's bad request,
    nor a deadline the caller made too short to judge the backend by."""
    return isinstance(exc, CANARY_FAULTS) and getattr(exc, "backend_fault", True)


def _first_float(request: InferRequest) -> np.ndarray | None:
    """The first floating-point input: what drift is measured on."""
    return next((a for a in request.inputs.values() if a.dtype.kind == "f"), None)


def _scores(response: InferResponse) -> np.ndarray | None:
    return next(iter(response.outputs.values()), None)
