"""The gateway's data plane: route, call the model server, judge canaries, mirror shadows, log.

Typed in, typed out: protobuf KServe messages and plain values; no HTTP or gRPC server types.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from services.events import EventProducer
from services.gateway.backend import ModelServerClient
from services.gateway.deadline import Deadline
from services.gateway.errors import (
    BackendFailed,
    BackendUnavailable,
    DeadlineExceeded,
    GatewayError,
    InvalidInput,
    RequestTooLarge,
)
from services.gateway.instances import instances_to_features, predictions
from services.gateway.metrics import ROLLBACKS, ROUTED, SHADOW
from services.gateway.model_cards import ModelCards
from services.gateway.model_events import publish_archived
from services.gateway.prediction_log import LogEntry, PredictionLogger
from services.gateway.rest_backend import HEADER_LENGTH_KEY, ModelServerREST, RestAnswer
from services.gateway.rollback import CanaryWatch, Verdict
from services.gateway.routing import CANARY, Choice, Route, RouteTable
from services.gateway.routing import SHADOW as SHADOW_ROUTE
from services.gateway.tensors import input_array, output_array, rest_document, rest_tensors
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.telemetry import request_id_var

log = logging.getLogger(__name__)

# Failures that are the backend's fault, so they count against a canary.
CANARY_FAULTS = (BackendFailed, BackendUnavailable, DeadlineExceeded)
FLOAT_TYPES = ("FP32", "FP64", "FP16")
T = TypeVar("T")


_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    """Unique across processes (a random prefix per process) without a syscall per request."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


@dataclass(frozen=True)
class Limits:
    deadline_s: float
    max_instances: int
    log_max_features: int


@dataclass(frozen=True)
class Answer:
    response: pb.ModelInferResponse
    route: str
    request_id: str


@dataclass(frozen=True)
class RestResult:
    """A v2 REST answer as the model server gave it, plus what logging it needs once it went out."""

    answer: RestAnswer
    model: str
    choice: Choice
    request_id: str
    key_id: str
    latency_s: float
    request_body: bytes
    request_headers: dict[str, str]  # lower-case names, as passed on
    synthetic: bool = False

    @property
    def request_header_length(self) -> str | None:
        return self.request_headers.get(HEADER_LENGTH_KEY)


class Gateway:
    def __init__(
        self,
        backend: ModelServerClient,
        rest: ModelServerREST,
        routes: RouteTable,
        watch: CanaryWatch,
        cards: ModelCards,
        logger: PredictionLogger,
        producer: EventProducer | None,
        limits: Limits,
    ) -> None:
        self.backend = backend
        self.rest = rest
        self.routes = routes
        self.cards = cards
        self._watch = watch
        self._logger = logger
        self._producer = producer
        self._limits = limits
        self._shadows: set[asyncio.Task[None]] = set()

    def deadline(self, client_s: float | None) -> Deadline:
        return Deadline.within(self._limits.deadline_s, client_s)

    # -- inference ---------------------------------------------------------------------------
    async def infer(
        self,
        request: pb.ModelInferRequest,
        key_id: str,
        deadline: Deadline,
        sticky_key: str | None,
        synthetic: bool = False,
    ) -> Answer:
        if not request.model_name:
            raise InvalidInput("model_name is required")
        if not request.inputs:
            raise InvalidInput("the request has no inputs")
        _check_version(request.model_version)
        choice = self.routes.choose(request.model_name, request.model_version, sticky_key)
        return await self._run(request, choice, key_id, deadline, synthetic)

    async def infer_rest(
        self,
        model: str,
        version: str,
        body: bytes,
        headers: dict[str, str],
        key_id: str,
        deadline: Deadline,
        sticky_key: str | None,
        synthetic: bool = False,
    ) -> RestResult:
        """A v2 REST request, routed and passed on as its own bytes; call `after_rest` once answered.

        `headers`: the body's own headers (content-type, content-encoding, inference-header-content-length)
        and x-request-id, lower-case; the dict is kept for logging and shadows.
        """
        _check_version(version)
        choice = self.routes.choose(model, version, sticky_key)
        request_id = headers.get("x-request-id") or new_request_id()
        request_id_var.set(request_id)
        headers["x-request-id"] = request_id
        answer, latency = await self._judged(
            model, choice, self.rest.infer(model, choice.version, body, headers, deadline)
        )
        return RestResult(answer, model, choice, request_id, key_id, latency, body, headers, synthetic)

    def after_rest(self, result: RestResult) -> None:
        """Log a REST prediction and mirror it to a shadow: after the answer went out, off its latency."""
        request = rest_document(result.request_body, result.request_header_length)
        request_id, features = result.request_id, None
        if request is not None:
            request_id = str(request[0].get("id") or request_id)
            features = next((a for t, a in rest_tensors(*request, "inputs") if t in FLOAT_TYPES), None)
        answered, scores = _rest_answer(result.answer)
        version = answered or result.choice.version
        self._log_arrays(
            request_id,
            result.model,
            version,
            features,
            scores,
            result.key_id,
            result.choice.route,
            result.latency_s,
            result.synthetic,
        )
        shadow = result.choice.shadow
        if shadow and shadow != version:
            self._spawn(self._shadow_rest(result, shadow, request_id, features))

    async def predict(
        self,
        model: str,
        instances: Any,
        key_id: str,
        deadline: Deadline,
        sticky_key: str | None,
        request_id: str,
        synthetic: bool = False,
    ) -> dict[str, Any]:
        """The friendly route: instances → features (per flywheel.json) → infer → labels and probabilities."""
        if not isinstance(instances, list) or not instances:
            raise InvalidInput("'instances' must be a non-empty list")
        if len(instances) > self._limits.max_instances:
            raise RequestTooLarge(f"{len(instances)} instances; the limit is {self._limits.max_instances}")
        choice = self.routes.choose(model, "", sticky_key)
        version = choice.version or await asyncio.to_thread(self.cards.latest_version, model)
        card = self.cards.get(model, version)
        features = instances_to_features(card, instances)
        request = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
        request.inputs.add(name=card.input, datatype="FP32", shape=list(features.shape))
        request.raw_input_contents.append(features.tobytes())
        request.outputs.add(name=card.output)
        answer = await self._run(request, Choice(version, choice.route, choice.shadow), key_id, deadline, synthetic)
        scores = _named_output(answer.response, card.output)
        if scores is None:
            raise BackendFailed(f"the model server's answer has no {card.output!r} output")
        return {
            "id": answer.request_id,
            "model": model,
            "model_version": answer.response.model_version,
            "predictions": predictions(card, scores),
        }

    async def _run(
        self, request: pb.ModelInferRequest, choice: Choice, key_id: str, deadline: Deadline, synthetic: bool
    ) -> Answer:
        if not request.id:
            request.id = new_request_id()
        request_id_var.set(request.id)
        forward = request  # ours to change: the caller's message is not used after this
        forward.model_version = choice.version
        call = self.rest.infer_proto(forward, deadline)
        response, latency = await self._judged(request.model_name, choice, call)
        self._log(forward, response, key_id, choice.route, latency, synthetic)
        if choice.shadow and choice.shadow != response.model_version:
            self._spawn(self._shadow(forward, choice.shadow, key_id, synthetic))
        return Answer(response, choice.route, request.id)

    async def _judged(self, model: str, choice: Choice, call: Awaitable[T]) -> tuple[T, float]:
        """Await the backend call; a canary's outcome and latency go to its watch. → (result, latency)."""
        started = time.perf_counter()
        try:
            result = await call
        except GatewayError as exc:
            if choice.route == CANARY and isinstance(exc, CANARY_FAULTS):
                self._judge(model, choice.version, False, time.perf_counter() - started)
            raise
        latency = time.perf_counter() - started
        if choice.route == CANARY:
            self._judge(model, choice.version, True, latency)
        ROUTED.labels(model, choice.route).inc()
        return result, latency

    # -- canary ------------------------------------------------------------------------------
    def _judge(self, model: str, version: str, ok: bool, latency_s: float) -> None:
        verdict = self._watch.record(model, version, ok, latency_s)
        if verdict is not None:
            self.rollback(verdict)

    def rollback(self, verdict: Verdict) -> bool:
        """Take a failing canary out of traffic, count it, and publish it as archived."""
        route = self.routes.get(verdict.model)
        self._watch.forget(verdict.model, verdict.version)
        if route is None or route.canary != verdict.version:
            return False
        self.routes.update(verdict.model, canary="", canary_weight=0.0)
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
        if self._producer is not None:
            publish_archived(self._producer, verdict.model, verdict.version, f"{verdict.reason}: {verdict.detail}")
        return True

    def set_route(self, route: Route) -> Route:
        old = self.routes.get(route.model)
        if old is not None and old.canary and old.canary != route.canary:
            self._watch.forget(route.model, old.canary)
        return self.routes.put(route)

    # -- shadow ------------------------------------------------------------------------------
    def _spawn(self, shadow: Awaitable[None]) -> None:
        task = asyncio.ensure_future(shadow)
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(self, request: pb.ModelInferRequest, version: str, key_id: str, synthetic: bool) -> None:
        copy = pb.ModelInferRequest()
        copy.CopyFrom(request)
        copy.model_version = version
        started = time.perf_counter()
        try:
            response = await self.rest.infer_proto(copy, self.deadline(None))
        except GatewayError as exc:
            SHADOW.labels(request.model_name, "error").inc()
            log.info(
                "shadow request failed", extra={"model": request.model_name, "version": version, "error": exc.message}
            )
            return
        SHADOW.labels(request.model_name, "ok").inc()
        self._log(copy, response, key_id, SHADOW_ROUTE, time.perf_counter() - started, synthetic)

    async def _shadow_rest(
        self, result: RestResult, version: str, request_id: str, features: np.ndarray | None
    ) -> None:
        headers = dict(result.request_headers)
        started = time.perf_counter()
        try:
            answer = await self.rest.infer(result.model, version, result.request_body, headers, self.deadline(None))
        except GatewayError as exc:
            SHADOW.labels(result.model, "error").inc()
            log.info("shadow request failed", extra={"model": result.model, "version": version, "error": exc.message})
            return
        SHADOW.labels(result.model, "ok").inc()
        _, scores = _rest_answer(answer)
        latency = time.perf_counter() - started
        self._log_arrays(
            request_id, result.model, version, features, scores, result.key_id, SHADOW_ROUTE, latency, result.synthetic
        )

    async def drain(self, timeout_s: float) -> None:
        if self._shadows:
            await asyncio.wait(list(self._shadows), timeout=timeout_s)

    # -- prediction logs ---------------------------------------------------------------------
    def _log(
        self,
        request: pb.ModelInferRequest,
        response: pb.ModelInferResponse,
        key_id: str,
        route: str,
        latency_s: float,
        synthetic: bool,
    ) -> None:
        version = response.model_version or request.model_version
        self._log_arrays(
            request.id,
            request.model_name,
            version,
            _first_input(request),
            _first_output(response),
            key_id,
            route,
            latency_s,
            synthetic,
        )

    def _log_arrays(
        self,
        request_id: str,
        model: str,
        version: str,
        features: np.ndarray | None,
        scores: np.ndarray | None,
        key_id: str,
        route: str,
        latency_s: float,
        synthetic: bool,
    ) -> None:
        labels = self.cards.labels(model, version) if version else ()
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
                    key_id=key_id,
                    route=route,
                    synthetic=synthetic,
                )
            )


def _rest_answer(answer: RestAnswer) -> tuple[str, np.ndarray | None]:
    """(model_version, first output) of a REST answer; ("", None) when unreadable."""
    response = rest_document(answer.body, answer.header_length)
    if response is None:
        return "", None
    outputs = rest_tensors(*response, "outputs")
    return str(response[0].get("model_version") or ""), outputs[0][1] if outputs else None


def _check_version(version: str) -> None:
    if version and not version.isdigit():
        raise InvalidInput(f"model_version must be a number, got {version!r}")


def _first_input(request: pb.ModelInferRequest) -> np.ndarray | None:
    for i, t in enumerate(request.inputs):
        if t.datatype in FLOAT_TYPES:
            return input_array(request, i)
    return None


def _first_output(response: pb.ModelInferResponse) -> np.ndarray | None:
    return output_array(response, 0) if response.outputs else None


def _named_output(response: pb.ModelInferResponse, name: str) -> np.ndarray | None:
    for i, t in enumerate(response.outputs):
        if t.name == name:
            return output_array(response, i)
    return None
