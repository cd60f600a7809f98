"""Notice a broker that came back without its log, for services that publish their state only once.

A broker whose log lives on an emptyDir or in memory starts empty after a restart, with a new cluster id.
Ingest re-sends its outbox then (services/ingest/pipeline.py); the trainer publishes every project spec
to the compacted `flywheel.projects` at start, so without this a broker restart would leave every
ingest or lake started afterwards refusing labels of projects it never heard of.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from services.events.producer import EventProducer

log = logging.getLogger(__name__)


class NewBrokerWatch:
    """Calls `on_new` once each time the broker's cluster id changes from one seen before, on a renewed
    producer (the old one's idempotence state belongs to the old cluster)."""

    def __init__(self, producer: EventProducer, on_new: Callable[[], object], interval_s: float = 15.0) -> None:
        self._producer = producer
        self._on_new = on_new
        self._interval_s = interval_s
        self._seen = ""

    def check(self) -> bool:
        """True when the broker is a new one (and `on_new` ran); the first id seen only sets the baseline."""
        try:
            current = self._producer.cluster_id()
        except Exception as exc:  # noqa: BLE001 - unreachable now: the next check asks again
            log.debug("broker cluster id unavailable", extra={"error": str(exc)})
            return False
        if not current:
            return False
        changed = bool(self._seen) and current != self._seen
        if changed:
            log.warning(
                "the broker is a new one (cluster id changed): publishing again what was published once",
                extra={"before": self._seen, "now": current},
            )
            self._producer.renew()
            self._on_new()
        self._seen = current
        return changed

    def run(self, stop: threading.Event) -> None:
        """Check every `interval_s` until `stop`. A failing `on_new` is logged and runs again at the next check
        (the new id is remembered only once it succeeded)."""
        while not stop.wait(self._interval_s):
            try:
                self.check()
            except Exception:  # the watch must outlive a failed re-publish
                log.exception("re-publishing to a new broker failed; it is tried again at the next check")
