"""The monitor's Prometheus metrics: per model, version, window kind, feature and test."""

from __future__ import annotations

import math

from prometheus_client import Counter, Gauge, Histogram

from services.monitor.detector import WindowVerdict

_V = ("model", "version")
_W = (*_V, "window")
_F = (*_W, "feature", "test")

STATISTIC = Gauge("flywheel_monitor_drift_statistic", "Test statistic or effect size of the last window", _F)
EFFECT = Gauge(
    "flywheel_monitor_drift_effect",
    "Effect size a decision test's drift verdict needs: PSI beyond sampling noise (floor: MIN_EFFECT)",
    _F,
)
DUPLICATES = Gauge("flywheel_monitor_window_duplicates", "Repeated inputs left out of the last window's tests", _W)
P_VALUE = Gauge("flywheel_monitor_drift_p_value", "p-value of the last window's test (ks, chi2)", _F)
FEATURE_DRIFTED = Gauge("flywheel_monitor_feature_drifted", "1 if the test rejected after correction", _F)
DRIFTED_SHARE = Gauge("flywheel_monitor_drifted_share", "Share of tests that rejected in the last window", _W)
WINDOW_SAMPLES = Gauge("flywheel_monitor_window_samples", "Predictions in the last tested window", _W)
WINDOW_DRIFTED = Gauge("flywheel_monitor_window_drifted", "1 if the last window drifted", _W)
STREAK = Gauge("flywheel_monitor_drift_streak", "Consecutive drifted windows", _W)
PERSISTING = Gauge("flywheel_monitor_drift_persisting", "1 while drift has lasted the configured windows", _W)
WINDOWS = Counter("flywheel_monitor_windows_total", "Windows tested", (*_W, "verdict"))
PREDICTIONS = Counter("flywheel_monitor_predictions_total", "Prediction logs observed", _V)
UNTESTED = Counter(
    "flywheel_monitor_windows_untested_total", "Windows not tested (no reference, too few samples)", (*_W, "reason")
)
ALERTS = Counter("flywheel_monitor_drift_alerts_total", "DriftAlerts published", _V)
TRAIN_REQUESTS = Counter(
    "flywheel_monitor_train_requests_total",
    "Retraining decisions: sent, escalated (sent inside a cooldown), cooldown, budget (suppressed)",
    ("model", "outcome"),
)
IGNORED = Counter(
    "flywheel_monitor_predictions_ignored_total",
    "Prediction logs left out of drift and accuracy: synthetic (load tests), no_features (logged by reference)",
    ("reason",),
)
REFERENCE_LOADED = Gauge(
    "flywheel_monitor_reference_loaded", "1 once the version's profile is loaded", ("model", "version")
)
ACCURACY = Gauge("flywheel_monitor_live_accuracy", "Accuracy over recent labelled predictions", _V)
LABELLED = Counter(
    "flywheel_monitor_labelled_predictions_total", "Predictions joined with a label", ("model", "version")
)
LATENCY = Histogram(
    "flywheel_monitor_prediction_latency_seconds",
    "Gateway latency reported in prediction logs",
    _V,
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)


def export_window(model: str, version: str, kind: str, verdict: WindowVerdict, streak: int, persisting: bool) -> None:
    w = (model, version, kind)
    for r in verdict.results:
        labels = (*w, r.feature, r.test)
        STATISTIC.labels(*labels).set(r.statistic)
        if not math.isnan(r.effect):
            EFFECT.labels(*labels).set(r.effect)
        if not math.isnan(r.p_value):
            P_VALUE.labels(*labels).set(r.p_value)
            FEATURE_DRIFTED.labels(*labels).set(1.0 if r.drifted else 0.0)
    DRIFTED_SHARE.labels(*w).set(verdict.drifted_share)
    WINDOW_SAMPLES.labels(*w).set(verdict.samples)
    DUPLICATES.labels(*w).set(verdict.duplicates)
    WINDOW_DRIFTED.labels(*w).set(1.0 if verdict.drifted else 0.0)
    STREAK.labels(*w).set(streak)
    PERSISTING.labels(*w).set(1.0 if persisting else 0.0)
    WINDOWS.labels(*w, "drifted" if verdict.drifted else "ok").inc()
