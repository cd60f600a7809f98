"""`make eval-drift`: how fast the monitor flags real shifts, and how rarely it cries wolf.

The monitor's own domain code (services.monitor.Monitor with its default settings: count window
200, step 50, Benjamini-Hochberg at alpha 0.005, an effect floor of 0.3 excess PSI, repeated
inputs tested once, 3 consecutive drifted windows) is fed digits traffic from a split the
reference profile never saw, predictions from a real classifier.

* detection: after 400 clean events, shifted events until the first DriftAlert, per shift type
  and strength, repeated with several seeds (events counted from the first shifted one);
* false alarms on unshifted traffic, per case, each as a stream through the monitor (sliding
  windows, every step): the share of windows flagged drifted and the DriftAlerts raised:
  - random draws from the live half (the stream also carries the fixed difference between the
    two halves of only 1797 images, a finite-pool artefact real traffic does not have);
  - a subset of the training distribution: a few writers (blocks of scikit-learn's file, which
    keeps each writer's digits together), and a few classes over-represented (3 classes at 2×);
  - large windows: the last 5000 predictions, every 1000;
  - duplicated inputs: a pool of 300 images sent again and again;
  plus independent windows under an exact null (random reference/live splits, disjoint windows
  drawn without replacement): the headline window rate.

Writes bench/results/drift.json and prints two tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.drift.traffic import DigitsTraffic, Shift, inversion, noise, prior_weights, rotation
from services.monitor.detector import DriftConfig, evaluate_window
from services.monitor.monitor import Monitor, Prediction, WindowParams
from services.monitor.policy import RetrainPolicy
from services.monitor.reference import Reference, ReferenceStore, SnapshotMap
from services.monitor.settings import MonitorSettings
from services.preprocessing.shifts import chain

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
    ("new_camera", 1.0, True),  # the demo's shift: rotation 20° + noise σ=0.1
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
    if kind == "new_camera":
        return chain(rotation(20.0), noise(0.1)), None
    if kind == "inverted_share":
        return inversion(strength), None
    return None, prior_weights(strength)


def new_monitor(profile: dict, settings: MonitorSettings, windows: WindowParams | None = None) -> Monitor:
    snapshots = SnapshotMap()
    snapshots.published("digits", "1", SNAPSHOT)
    return Monitor(
        drift_config(settings),
        windows or WindowParams(settings.window_size, settings.window_step, 1e9, 1e9, settings.time_window_max),
        ReferenceStore("memory://", loader=lambda url: profile),
        snapshots,
        RetrainPolicy(settings.train_cooldown_s, settings.train_budget, settings.train_budget_period_s),
        persist_windows=settings.persist_windows,
        alert_repeat_s=settings.alert_repeat_s,
        export=False,
    )


def drift_config(settings: MonitorSettings) -> DriftConfig:
    return DriftConfig(
        settings.features,
        settings.alpha,
        settings.correction,
        settings.min_samples,
        settings.min_drifted_share,
        settings.min_effect,
        settings.dedupe,
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


@dataclass(frozen=True)
class UnshiftedCase:
    name: str
    describe: str
    draw: Callable[[DigitsTraffic, int, np.random.Generator], tuple[np.ndarray, np.ndarray]]
    windows: Callable[[MonitorSettings], WindowParams] | None = None


def _random(traffic: DigitsTraffic, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x, _, predicted, _ = traffic.sample(n, rng)
    return x, predicted


def _writers(traffic: DigitsTraffic, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n/4 draws from each of four blocks of about 3-4 writers, one block after the other."""
    parts = [traffic.sample(n // 4, rng, pool=traffic.writers_block(start, 500)) for start in (0, 450, 900, 1290)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[2] for p in parts])


def _classes(traffic: DigitsTraffic, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    weights = np.ones(10)
    weights[[0, 1, 2]] = 2.0
    x, _, predicted, _ = traffic.sample(n, rng, class_weights=weights)
    return x, predicted


def _duplicates(traffic: DigitsTraffic, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    pool = rng.permutation(len(traffic.live_x))[:300]
    x, _, predicted, _ = traffic.sample(n, rng, pool=pool)
    return x, predicted


def _large(settings: MonitorSettings) -> WindowParams:
    return WindowParams(5000, 1000, 1e9, 1e9, settings.time_window_max)


def _duplicate_windows(settings: MonitorSettings) -> WindowParams:
    return WindowParams(1000, 250, 1e9, 1e9, settings.time_window_max)


UNSHIFTED: list[UnshiftedCase] = [
    UnshiftedCase("random", "random draws from the live half", _random),
    UnshiftedCase("few_writers", "subset: blocks of 3-4 writers, one after another", _writers),
    UnshiftedCase("few_classes", "subset: 3 classes over-represented 2x", _classes),
    UnshiftedCase("large_windows", "windows of the last 5000 predictions", _random, _large),
    UnshiftedCase("duplicates", "a pool of 300 images, resent (windows of 1000)", _duplicates, _duplicate_windows),
]


def unshifted_streams(traffic: DigitsTraffic, profile: dict, settings: MonitorSettings, events: int) -> list[dict]:
    rows = []
    for i, case in enumerate(UNSHIFTED):
        rng = np.random.default_rng(7 + i)
        windows = case.windows(settings) if case.windows else None
        monitor = new_monitor(profile, settings, windows)
        x, predicted = case.draw(traffic, events, rng)
        tested = flagged = alerts = 0
        samples: list[int] = []
        for start in range(0, len(x), 50):
            batch = [
                Prediction("digits", "1", x[j], str(predicted[j]), float(j), f"e{j}")
                for j in range(start, min(start + 50, len(x)))
            ]
            outcomes, new_alerts, _ = monitor.observe(batch)
            tested += len(outcomes)
            flagged += sum(o.verdict.drifted for o in outcomes)
            samples += [o.verdict.samples for o in outcomes]
            alerts += len(new_alerts)
        rows.append(
            {
                "case": case.name,
                "describe": case.describe,
                "events": len(x),
                "windows": tested,
                "windows_drifted": flagged,
                "window_false_alarm_rate": flagged / max(tested, 1),
                "alerts": alerts,
                "distinct_inputs_per_window_median": statistics.median(samples) if samples else 0,
            }
        )
    return rows


def independent_windows(traffic: DigitsTraffic, settings: MonitorSettings, splits: int) -> dict:
    rng = np.random.default_rng(7)
    config = drift_config(settings)
    size = settings.window_size
    drifted = windows = 0
    for split in range(splits):
        part = traffic.resplit(100 + split)
        reference = Reference.from_profile(part.profile(f"split-{split}"))
        xs, _, ps, _ = part.sample(len(part.live_x), rng, replace=False)
        for start in range(0, len(xs) - size + 1, size):
            verdict = evaluate_window(
                reference, xs[start : start + size], [str(p) for p in ps[start : start + size]], config
            )
            windows += 1
            drifted += bool(verdict and verdict.drifted)
    return {
        "splits": splits,
        "windows": windows,
        "windows_drifted": drifted,
        "window_false_alarm_rate": drifted / max(windows, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.drift", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="seeds per shift and strength")
    parser.add_argument("--stream-events", type=int, default=40_000, help="events per unshifted case")
    parser.add_argument("--splits", type=int, default=250, help="random splits for independent windows (4 each)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    settings = MonitorSettings()
    started = time.time()
    traffic = DigitsTraffic.load(seed=0)
    profile = traffic.profile(SNAPSHOT)
    rows = detection(traffic, profile, settings, args.repeats)
    streams = unshifted_streams(traffic, profile, settings, args.stream_events)
    independent = independent_windows(traffic, settings, args.splits)
    clear = [r for r in rows if r["clear"]]
    targets = {
        "clear_shift_detected_within_500_events": all(r["detected_within_500"] == 1.0 for r in clear),
        "false_alarm_windows_at_most_1pct_every_case": all(
            r["window_false_alarm_rate"] <= TARGET_FALSE_ALARM for r in [*streams, independent]
        ),
        "no_alert_on_unshifted_traffic": all(r["alerts"] == 0 for r in streams),
    }
    result = {
        "settings": {
            k: getattr(settings, k)
            for k in (
                "features",
                "window_size",
                "window_step",
                "min_samples",
                "alpha",
                "correction",
                "min_effect",
                "dedupe",
                "persist_windows",
            )
        },
        "warmup_events": WARMUP,
        "shifted_event_budget": BUDGET,
        "detection": rows,
        "unshifted": streams,
        "independent_windows": independent,
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
    print()
    print(f"{'unshifted case':<16}{'events':>8}{'windows':>9}{'drifted':>9}{'rate':>8}{'alerts':>8}{'distinct':>10}")
    for r in streams:
        print(
            f"{r['case']:<16}{r['events']:>8}{r['windows']:>9}{r['windows_drifted']:>9}"
            f"{r['window_false_alarm_rate']:>8.2%}{r['alerts']:>8}{r['distinct_inputs_per_window_median']:>10.0f}"
        )
    print(
        f"{'independent':<16}{'':>8}{independent['windows']:>9}{independent['windows_drifted']:>9}"
        f"{independent['window_false_alarm_rate']:>8.2%}{'-':>8}   ({independent['splits']} random splits)"
    )
    print("targets:", ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in targets.items()))
    print(f"wrote {args.out}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
