"""`make eval-drift`: how fast the monitor flags real shifts, and how rarely it cries wolf.

The monitor's own domain code (services.monitor.Monitor with its default settings: count window
200, step 50, Benjamini-Hochberg at alpha 0.005, 3 consecutive drifted windows) is fed digits
traffic from a split the reference profile never saw, predictions from a real classifier.

* detection: after 400 clean events, shifted events until the first DriftAlert, per shift type
  and strength, repeated with several seeds (events counted from the first shifted one);
* false alarms, two ways:
  - independent windows under an exact null: for each of many random reference/live splits of
    the digits, the profile is built from one half and disjoint windows are drawn without
    replacement from the other half; the share of windows flagged drifted (the headline rate);
  - a long unshifted stream through the monitor (sliding windows, every step), drawn with
    replacement from one fixed live half of only 899 images: the share of drifted windows and
    the DriftAlerts raised. This stream also carries the fixed difference between the two halves
    (a finite-pool artefact real traffic does not have), so its window rate is an upper bound.

Writes bench/results/drift.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from bench.drift.traffic import DigitsTraffic, Shift, inversion, noise, prior_weights, rotation
from services.monitor.detector import DriftConfig, evaluate_window
from services.monitor.monitor import Monitor, Prediction, WindowParams
from services.monitor.policy import RetrainPolicy
from services.monitor.reference import Reference, ReferenceStore, SnapshotMap
from services.monitor.settings import MonitorSettings

RESULTS = Path(__file__).resolve().parents[1] / "results" / "drift.json"
SNAPSHOT = "eval"
WARMUP = 400
BUDGET = 3000
TARGET_EVENTS = 500
TARGET_FALSE_ALARM = 0.01

# (shift, strength, is it a "clear" shift the 500-event target applies to)
SHIFTS: list[tuple[str, float, bool]] = [
    ("noise_sigma", 0.02, False),
    ("noise_sigma", 0.05, False),
    ("noise_sigma", 0.1, True),
    ("noise_sigma", 0.2, True),
    ("rotation_deg", 5, False),
    ("rotation_deg", 10, False),
    ("rotation_deg", 20, True),
    ("rotation_deg", 45, True),
    ("inverted_share", 0.05, False),
    ("inverted_share", 0.1, False),
    ("inverted_share", 0.25, True),
    ("inverted_share", 1.0, True),
    ("class_prior_strength", 0.1, False),
    ("class_prior_strength", 0.25, False),
    ("class_prior_strength", 0.5, True),
    ("class_prior_strength", 1.0, True),
]


def make_shift(kind: str, strength: float) -> tuple[Shift | None, np.ndarray | None]:
    if kind == "noise_sigma":
        return noise(strength), None
    if kind == "rotation_deg":
        return rotation(strength), None
    if kind == "inverted_share":
        return inversion(strength), None
    return None, prior_weights(strength)


def new_monitor(profile: dict, settings: MonitorSettings) -> Monitor:
    snapshots = SnapshotMap()
    snapshots.published("digits", "1", SNAPSHOT)
    return Monitor(
        DriftConfig(settings.features, settings.alpha, settings.correction, settings.min_samples),
        WindowParams(settings.window_size, settings.window_step, 1e9, 1e9, settings.time_window_max),
        ReferenceStore("memory://", loader=lambda url: profile),
        snapshots,
        RetrainPolicy(settings.train_cooldown_s, settings.train_budget, settings.train_budget_period_s),
        persist_windows=settings.persist_windows,
        alert_repeat_s=settings.alert_repeat_s,
        export=False,
    )


def feed(monitor: Monitor, x: np.ndarray, predicted: np.ndarray, start: int, chunk: int = 25) -> tuple[int | None, int]:
    """Feed in small batches; return (events fed until the first alert or None, windows tested)."""
    windows = 0
    for i in range(0, len(x), chunk):
        batch = [
            Prediction("digits", "1", x[j], str(predicted[j]), float(start + j), f"e{start + j}")
            for j in range(i, min(i + chunk, len(x)))
        ]
        outcomes, alerts, _ = monitor.observe(batch)
        windows += len(outcomes)
        if alerts:
            return min(i + chunk, len(x)), windows
    return None, windows


def detection(traffic: DigitsTraffic, profile: dict, settings: MonitorSettings, repeats: int) -> list[dict]:
    rows = []
    for kind, strength, clear in SHIFTS:
        shift, weights = make_shift(kind, strength)
        events: list[int | None] = []
        for seed in range(repeats):
            rng = np.random.default_rng(1000 + seed)
            monitor = new_monitor(profile, settings)
            x, _, predicted, _ = traffic.sample(WARMUP, rng)
            early, _ = feed(monitor, x, predicted, 0)
            x, _, predicted, _ = traffic.sample(BUDGET, rng, shift, weights)
            found, _ = feed(monitor, x, predicted, WARMUP)
            events.append(None if early is not None else found)
        detected = [e for e in events if e is not None]
        rows.append(
            {
                "shift": kind,
                "strength": strength,
                "clear": clear,
                "runs": repeats,
                "detected_runs": len(detected),
                "events_to_detection_median": statistics.median(detected) if detected else None,
                "events_to_detection_max": max(detected) if detected else None,
                "detected_within_500": sum(1 for e in detected if e <= TARGET_EVENTS) / repeats,
            }
        )
    return rows


def false_alarms(
    traffic: DigitsTraffic, profile: dict, settings: MonitorSettings, stream_events: int, splits: int
) -> dict:
    rng = np.random.default_rng(7)
    monitor = new_monitor(profile, settings)
    x, _, predicted, _ = traffic.sample(stream_events, rng)
    flagged = tested = alerts = 0
    for i in range(0, stream_events, 50):
        batch = [Prediction("digits", "1", x[j], str(predicted[j]), float(j), f"e{j}") for j in range(i, i + 50)]
        outcomes, new_alerts, _ = monitor.observe(batch)
        tested += len(outcomes)
        flagged += sum(o.verdict.drifted for o in outcomes)
        alerts += len(new_alerts)
    config = DriftConfig(settings.features, settings.alpha, settings.correction, settings.min_samples)
    size = settings.window_size
    independent = windows = 0
    for split in range(splits):
        part = traffic.resplit(100 + split)
        reference = Reference.from_profile(part.profile(f"split-{split}"))
        xs, _, ps, _ = part.sample(len(part.live_x), rng, replace=False)
        for start in range(0, len(xs) - size + 1, size):
            verdict = evaluate_window(
                reference, xs[start : start + size], [str(p) for p in ps[start : start + size]], config
            )
            windows += 1
            independent += bool(verdict and verdict.drifted)
    return {
        "independent_splits": splits,
        "independent_windows": windows,
        "independent_windows_drifted": independent,
        "independent_window_false_alarm_rate": independent / max(windows, 1),
        "stream_events": stream_events,
        "stream_windows": tested,
        "stream_windows_drifted": flagged,
        "stream_window_false_alarm_rate": flagged / max(tested, 1),
        "stream_alerts": alerts,
        "stream_alert_rate_per_window": alerts / max(tested, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.drift", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="seeds per shift and strength")
    parser.add_argument("--stream-events", type=int, default=40_000, help="unshifted events for the alert rate")
    parser.add_argument("--splits", type=int, default=250, help="random splits for independent windows (4 each)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    settings = MonitorSettings()
    started = time.time()
    traffic = DigitsTraffic.load(seed=0)
    profile = traffic.profile(SNAPSHOT)
    rows = detection(traffic, profile, settings, args.repeats)
    fa = false_alarms(traffic, profile, settings, args.stream_events, args.splits)
    clear = [r for r in rows if r["clear"]]
    targets = {
        "clear_shift_detected_within_500_events": all(r["detected_within_500"] == 1.0 for r in clear),
        "false_alarm_windows_at_most_1pct": fa["independent_window_false_alarm_rate"] <= TARGET_FALSE_ALARM,
        "no_alert_on_unshifted_stream": fa["stream_alerts"] == 0,
    }
    result = {
        "settings": {
            k: getattr(settings, k)
            for k in ("features", "window_size", "window_step", "min_samples", "alpha", "correction", "persist_windows")
        },
        "warmup_events": WARMUP,
        "shifted_event_budget": BUDGET,
        "detection": rows,
        "false_alarms": fa,
        "targets": targets,
        "seconds": round(time.time() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'shift':<22}{'strength':>9}{'clear':>7}{'detected':>10}{'median ev':>11}{'max ev':>8}{'≤500':>7}")
    for r in rows:
        med = "-" if r["events_to_detection_median"] is None else f"{r['events_to_detection_median']:.0f}"
        mx = "-" if r["events_to_detection_max"] is None else f"{r['events_to_detection_max']}"
        print(
            f"{r['shift']:<22}{r['strength']:>9}{'yes' if r['clear'] else '':>7}"
            f"{r['detected_runs']:>5}/{r['runs']:<4}{med:>11}{mx:>8}{r['detected_within_500']:>7.0%}"
        )
    print(
        f"false alarms: {fa['independent_windows_drifted']}/{fa['independent_windows']} independent windows "
        f"({fa['independent_window_false_alarm_rate']:.2%}) over {fa['independent_splits']} random splits; "
        f"stream of {fa['stream_events']} unshifted events: {fa['stream_windows_drifted']}/{fa['stream_windows']} "
        f"sliding windows drifted ({fa['stream_window_false_alarm_rate']:.2%}), {fa['stream_alerts']} DriftAlerts"
    )
    print("targets:", ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in targets.items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
