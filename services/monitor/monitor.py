"""The monitor's domain: prediction logs in; tested windows, drift alerts and retrain decisions out.

Transport-free: the Kafka adapter (transport/kafka.py) turns events into `Prediction`s and the
`Alert` / `Retrain` results back into `DriftAlert` / `TrainRequest` events.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from services.monitor import metrics
from services.monitor.detector import DriftConfig, WindowVerdict, evaluate_window
from services.monitor.policy import RetrainPolicy
from services.monitor.reference import ReferenceStore, SnapshotMap
from services.monitor.statistics import TestResult
from services.monitor.windows import VersionWindows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowParams:
    size: int = 200
    step: int = 50
    span_s: float = 300.0
    step_s: float = 30.0
    time_max: int = 5000


@dataclass(frozen=True)
class Prediction:
    model: str
    version: str
    features: np.ndarray  # (d,)
    predicted_label: str
    event_time: float  # seconds since the epoch
    event_id: str
    example_id: str = ""
    latency_ms: float = 0.0


@dataclass(frozen=True)
class Alert:
    event_id: str
    model: str
    version: str
    snapshot_id: str
    window: str
    windows: int
    drifted_share: float
    samples: int
    results: tuple[TestResult, ...]


@dataclass(frozen=True)
class Retrain:
    event_id: str
    model: str
    version: str
    drifted_share: float
    reason: str
    caused_by: str


@dataclass(frozen=True)
class WindowOutcome:
    model: str
    version: str
    window: str
    verdict: WindowVerdict
    streak: int
    alert: Alert | None


@dataclass
class _Streak:
    count: int = 0
    last_alert_time: float | None = None


@dataclass
class _Version:
    windows: VersionWindows
    streaks: dict[str, _Streak] = field(default_factory=lambda: {"count": _Streak(), "time": _Streak()})
    outcomes: deque[bool] = field(default_factory=lambda: deque(maxlen=500))


def stable_id(*parts: object) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, "|".join(str(p) for p in parts)).hex


class Monitor:
    def __init__(
        self,
        config: DriftConfig,
        windows: WindowParams,
        references: ReferenceStore,
        snapshots: SnapshotMap,
        policy: RetrainPolicy,
        persist_windows: int = 3,
        alert_repeat_s: float = 300.0,
        label_join_max: int = 100_000,
        accuracy_window: int = 500,
        export: bool = True,
    ) -> None:
        self.config = config
        self.window_params = windows
        self.references = references
        self.snapshots = snapshots
        self.policy = policy
        self.persist_windows = persist_windows
        self.alert_repeat_s = alert_repeat_s
        self._export = export
        self._versions: dict[tuple[str, str], _Version] = {}
        self._joins: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self._join_max = label_join_max
        self._accuracy_window = accuracy_window
        self._lock = threading.Lock()

    # -- inputs -----------------------------------------------------------------------------
    def model_published(self, model: str, version: str, snapshot_id: str) -> None:
        self.snapshots.published(model, version, snapshot_id)

    def observe(self, predictions: list[Prediction]) -> tuple[list[WindowOutcome], list[Alert], list[Retrain]]:
        """Add predictions; test every window that became due; return outcomes, alerts and retrains."""
        outcomes: list[WindowOutcome] = []
        with self._lock:
            for p in predictions:
                state = self._version(p.model, p.version)
                state.windows.add(p.features, p.predicted_label, p.event_time, p.event_id)
                if self._export:
                    metrics.PREDICTIONS.labels(p.model, p.version).inc()
                    if p.latency_ms > 0:
                        metrics.LATENCY.labels(p.model, p.version).observe(p.latency_ms / 1000.0)
                if p.example_id and self._join_max:
                    self._joins[p.example_id] = (p.model, p.version, p.predicted_label)
                    self._joins.move_to_end(p.example_id)
                    while len(self._joins) > self._join_max:
                        self._joins.popitem(last=False)
                for kind in state.windows.due():
                    outcome = self._test(p.model, p.version, state, kind)
                    if outcome is not None:
                        outcomes.append(outcome)
        alerts = [o.alert for o in outcomes if o.alert is not None]
        retrains: list[Retrain] = []
        for alert in alerts:
            if self._export:
                metrics.ALERTS.labels(alert.model, alert.version).inc()
            decision = self.policy.decide(alert.model, alert.version, alert.drifted_share)
            if self._export:
                metrics.TRAIN_REQUESTS.labels(alert.model, decision.outcome).inc()
            if decision.send:
                reason = (
                    f"drift in {alert.model} v{alert.version} for {alert.windows} {alert.window} windows: "
                    f"{alert.drifted_share:.0%} of tests drifted over {alert.samples} predictions"
                )
                retrains.append(
                    Retrain(
                        stable_id("train", alert.event_id),
                        alert.model,
                        alert.version,
                        alert.drifted_share,
                        reason,
                        alert.event_id,
                    )
                )
            log.info(
                "drift alert",
                extra={
                    "model": alert.model,
                    "version": alert.version,
                    "window": alert.window,
                    "drifted_share": round(alert.drifted_share, 4),
                    "retrain": decision.outcome,
                    "retrain_reason": decision.reason,
                },
            )
        return outcomes, alerts, retrains

    def label(self, example_id: str, label: str) -> bool:
        """Join a label with the prediction made for its example; True when it joined."""
        with self._lock:
            joined = self._joins.pop(example_id, None)
            if joined is None:
                return False
            model, version, predicted = joined
            state = self._version(model, version)
            state.outcomes.append(predicted == label)
            accuracy = sum(state.outcomes) / len(state.outcomes)
        if self._export:
            metrics.LABELLED.labels(model, version).inc()
            metrics.ACCURACY.labels(model, version).set(accuracy)
        return True

    # -- internals --------------------------------------------------------------------------
    def _version(self, model: str, version: str) -> _Version:
        key = (model, version)
        state = self._versions.get(key)
        if state is None:
            w = self.window_params
            state = _Version(VersionWindows(w.size, w.step, w.span_s, w.step_s, w.time_max))
            state.outcomes = deque(maxlen=self._accuracy_window)
            self._versions[key] = state
        return state

    def _test(self, model: str, version: str, state: _Version, kind: str) -> WindowOutcome | None:
        snapshot_id = self.snapshots.snapshot_of(model, version)
        reference = self.references.get(snapshot_id) if snapshot_id else None
        if self._export:
            metrics.REFERENCE_LOADED.labels(model, version).set(1.0 if reference is not None else 0.0)
        if reference is None:
            if self._export:
                reason = "unknown_snapshot" if not snapshot_id else "profile_unavailable"
                metrics.UNTESTED.labels(model, version, kind, reason).inc()
            return None  # stays due: tested as soon as the reference is known
        window = state.windows.take(kind)
        if window.features.ndim != 2 or window.features.shape[1] != reference.feature_dim:
            if self._export:
                metrics.UNTESTED.labels(model, version, kind, "feature_dim").inc()
            return None
        verdict = evaluate_window(reference, window.features, window.predicted, self.config)
        if verdict is None:
            if self._export:
                metrics.UNTESTED.labels(model, version, kind, "too_few_samples").inc()
            return None
        streak = state.streaks[kind]
        streak.count = streak.count + 1 if verdict.drifted else 0
        if streak.count == 0:
            streak.last_alert_time = None
        persisting = streak.count >= self.persist_windows
        alert = None
        if persisting and (
            streak.last_alert_time is None or window.end_time - streak.last_alert_time >= self.alert_repeat_s
        ):
            streak.last_alert_time = window.end_time
            alert = Alert(
                event_id=stable_id("drift", model, version, kind, window.last_event_id),
                model=model,
                version=version,
                snapshot_id=reference.snapshot_id,
                window=kind,
                windows=streak.count,
                drifted_share=verdict.drifted_share,
                samples=verdict.samples,
                results=tuple(r for r in verdict.decisions() if r.drifted),
            )
        if self._export:
            metrics.export_window(model, version, kind, verdict, streak.count, persisting)
        return WindowOutcome(model, version, kind, verdict, streak.count, alert)
