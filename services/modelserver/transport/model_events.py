"""`flywheel.models` → load the announced version (idempotent: a replay re-reads the same folder).

The consume loop runs in its own thread; each event asks the served models on the server's event
loop to reload the model from the repository, which loads, warms up and swaps in the new
version. An event whose version is not in this server's repository is stale or meant for
another repository: it is logged and skipped. A version that is present but cannot be loaded
is invalid in context and goes to the dead-letter topic with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from collections.abc import Coroutine
from typing import Any

from services.events import EventProducer
from services.events.consumer import ConsumeLoop, ConsumerConfig, Record, invalid_in_context
from services.events.topics import MODELS
from services.modelserver.errors import InvalidModelConfig, ModelLoadFailed, ModelNotFound
from services.modelserver.served import ServedModels

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 300.0


def default_group() -> str:
    """Every model-server process must see every event, so each has a group of its own."""
    return f"modelserver-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class ModelEventHandler:
    def __init__(self, models: ServedModels, loop: asyncio.AbstractEventLoop) -> None:
        self._models = models
        self._loop = loop

    def __call__(self, records: list[Record]) -> None:
        for record in records:
            event = record.event
            model, version = event.model, event.version  # type: ignore[attr-defined]
            if not version.isdigit() or not (self._models.repository.root / model / version).is_dir():
                log.info(
                    "model event skipped: version not in this repository", extra={"model": model, "version": version}
                )
                continue
            try:
                versions = self._run(self._models.load(model))
            except ModelNotFound as exc:
                log.info("model event skipped", extra={"model": model, "version": version, "reason": exc.message})
            except (ModelLoadFailed, InvalidModelConfig) as exc:
                raise invalid_in_context(record, f"cannot load {model} v{version}: {exc.message}") from exc
            else:
                log.info("model event applied", extra={"model": model, "version": version, "serving": versions})

    def _run(self, coro: Coroutine[Any, Any, list[int]]) -> list[int]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(LOAD_TIMEOUT_S)


def start_model_events(
    bootstrap: str,
    group: str,
    models: ServedModels,
    loop: asyncio.AbstractEventLoop,
    stop: threading.Event,
    security: dict[str, str] | None = None,
) -> tuple[ConsumeLoop, threading.Thread]:
    security = dict(security or {})
    consume = ConsumeLoop(
        ConsumerConfig(bootstrap=bootstrap, group=group or default_group(), topics=[MODELS.name], extra=security),
        ModelEventHandler(models, loop),
        EventProducer(bootstrap, client_id="modelserver", **security),
        stop,
    )
    thread = threading.Thread(target=consume.run, name="model-events", daemon=True)
    thread.start()
    return consume, thread
