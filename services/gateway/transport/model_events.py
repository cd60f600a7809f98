"""`flywheel.models` in (stage → alias) and out (a rolled-back canary is published as archived).

Stages: production → the production alias (a canary of that version is promoted, so it leaves
the canary alias); canary → the canary alias at the configured weight (kept if already set);
archived → every alias pointing at it is cleared; candidate → nothing. Applying an event twice
is harmless. Each gateway process has its own group (every replica must see every event) that
starts at the latest offset: routes survive restarts in SQL, not by replaying history.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

from services.events import EventProducer
from services.events.codec import new_meta
from services.events.consumer import ConsumeLoop, ConsumerConfig, Record
from services.events.topics import MODELS
from services.gateway.rollback import Verdict
from services.gateway.routing import RouteTable
from services.genproto.flywheel.v1 import events_pb2 as ev

log = logging.getLogger(__name__)


def apply_stage(routes: RouteTable, model: str, version: str, stage: str, canary_weight: float) -> None:
    route = routes.get(model)
    if stage == "production":
        canary = "" if route is not None and route.canary == version else (route.canary if route else "")
        weight = route.canary_weight if route is not None and canary else 0.0
        routes.update(model, production=version, canary=canary, canary_weight=weight)
    elif stage == "canary":
        weight = route.canary_weight if route is not None and route.canary and route.canary_weight > 0 else None
        routes.update(model, canary=version, canary_weight=weight if weight is not None else canary_weight)
    elif stage == "archived" and route is not None:
        changes: dict[str, object] = {}
        if route.production == version:
            changes["production"] = ""
        if route.canary == version:
            changes.update(canary="", canary_weight=0.0)
        if route.shadow == version:
            changes["shadow"] = ""
        if changes:
            routes.update(model, **changes)
    else:
        return
    log.info("route changed by event", extra={"model": model, "version": version, "stage": stage})


class ModelEventHandler:
    def __init__(self, routes: RouteTable, canary_weight: float) -> None:
        self._routes = routes
        self._weight = canary_weight

    def __call__(self, records: list[Record]) -> None:
        for record in records:
            e = record.event
            if not e.model or not e.version.isdigit():  # type: ignore[attr-defined]
                log.info("model event without a numeric version skipped", extra={"model": e.model})  # type: ignore[attr-defined]
                continue
            apply_stage(self._routes, e.model, e.version, e.stage, self._weight)  # type: ignore[attr-defined]


def archived_publisher(producer: EventProducer) -> Callable[[Verdict], None]:
    """A rolled-back canary → `ModelPublished(stage=archived)`, the reason in a header."""

    def publish(verdict: Verdict) -> None:
        event = ev.ModelPublished(
            meta=new_meta("gateway"), model=verdict.model, version=verdict.version, stage="archived"
        )
        producer.send(MODELS.name, event, headers={"reason": f"{verdict.reason}: {verdict.detail}"})

    return publish


def start_model_events(
    bootstrap: str,
    group: str,
    routes: RouteTable,
    canary_weight: float,
    producer: EventProducer,
    stop: threading.Event,
    security: dict[str, str] | None = None,
) -> tuple[ConsumeLoop, threading.Thread]:
    group = group or f"gateway-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    config = ConsumerConfig(
        bootstrap=bootstrap, group=group, topics=[MODELS.name], auto_offset_reset="latest", extra=dict(security or {})
    )
    consume = ConsumeLoop(
        config,
        ModelEventHandler(routes, canary_weight),
        producer,
        stop,
    )
    thread = threading.Thread(target=consume.run, name="model-events", daemon=True)
    thread.start()
    return consume, thread
