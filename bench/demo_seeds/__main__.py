"""`make demo-seeds`: the training part of the demo's story, once per seed, to show it cannot fail by chance.

For each seed, exactly what `flywheel demo --seed N` trains for v1: the digits that seed draws
for labelling (services.cli.demo.data.Digits), split the way the lake splits them (stratified by a
salted hash of the example id, the demo's salt), the demo's model family and hyperparameters, one
training job as the trainer service runs it (baselines, overfit check, training, export,
registry), then the promotion gate. Reports per seed v1's test accuracy, logistic regression's,
the combined-metric margin over the best baseline and the gate's verdict; then the margin's
distribution. Writes bench/results/demo_seeds.json.

    python -m bench.demo_seeds [--seeds 20] [--search]

Without --search this is the quick story's v1 (`--quick`: the same labels and model, no search); with
it, the full story's, whose search tries single networks (its first trial is the quick story's
point), then trains the ensemble at the best one on validation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import torch

from services.cli.demo.config import MODEL, DemoConfig
from services.cli.demo.data import Digits
from services.lake.snapshots import SplitSpec, assign_splits
from services.storage import Database, migrate
from services.trainer.data.sklearn_digits import write_snapshot
from services.trainer.export import ExportOptions
from services.trainer.job_run import JobContext, JobSpec, git_commit, run_job
from services.trainer.registry import Registry
from services.trainer.settings import TrainerSettings
from services.trainer.tables import MIGRATIONS
from services.trainer.training.metrics import CombinedMetric

RESULTS = Path(__file__).resolve().parents[1] / "results" / "demo_seeds.json"
# The trainer service's defaults: the gate's margin and the combined metric.
GATE_MARGIN: float = TrainerSettings.model_fields["promotion_margin"].default
COMBINED: str = TrainerSettings.model_fields["combined_metric"].default


def one_seed(seed: int, search: bool, tmp: Path, ctx: JobContext, registry: Registry) -> dict:
    cfg = DemoConfig.make(not search, tmp / "home", seed)
    digits = Digits.load(cfg.n_labels, seed)
    # The example ids the demo gives them (webhook half "ls-…", Kafka half "kafka-…"), split as the lake does.
    half = len(digits.label_x) // 2
    ids = [f"ls-{digits.run}-{1 + i}" for i in range(half)]
    ids += [f"kafka-{digits.run}-{i}" for i in range(half, len(digits.label_x))]
    labels = [str(int(v)) for v in digits.label_y]
    splits = assign_splits(ids, labels, SplitSpec(0.7, 0.15, 0.15, cfg.split_salt).validated())
    snapshot_id = f"seed-{seed}-{uuid.uuid4().hex[:6]}"
    uri = write_snapshot(tmp / "lake", snapshot_id, ids, labels, digits.label_x, splits, cfg.split_salt).as_uri()
    model = f"{MODEL}-s{seed}-{uuid.uuid4().hex[:4]}"
    spec = JobSpec(
        uuid.uuid4().hex[:12],
        model,
        cfg.family,
        snapshot_id,
        uri,
        cfg.hyperparameters,
        search_trials=cfg.search_trials if search else 0,
        search_rounds=2,
    )
    started = time.perf_counter()
    out = run_job(spec, ctx)
    m = out.metrics
    refused = registry.gate(registry.get(model, out.version))
    return {
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
        "test_rows": int(sum(1 for s in splits if s == "test")),
        "v1_test_accuracy": round(m["test_accuracy"], 4),
        "logistic_regression_test_accuracy": round(m["baseline_logistic_regression_test_accuracy"], 4),
        "margin_combined": round(m["test_combined"] - m["baseline_best_test_combined"], 4),
        "gate": "passes" if not refused else "; ".join(refused),
        "epochs": out.report.get("epochs_run"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.demo_seeds", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1")
    parser.add_argument("--search", action="store_true", help="with the full demo's search (slower)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    load_at_start = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        url = f"sqlite:///{tmp / 'registry.db'}"
        migrate(url, [MIGRATIONS])
        registry = Registry(Database(url), repository_uri=(tmp / "models").as_uri(), margin=GATE_MARGIN)
        ctx = JobContext(
            repository=tmp / "models",
            reports=tmp / "reports",
            registry=registry,
            combined=CombinedMetric.parse(COMBINED),
            export=ExportOptions(),
            threads=1,
            git_commit=git_commit(),
        )
        for seed in range(args.seeds):
            row = one_seed(seed, args.search, tmp, ctx, registry)
            rows.append(row)
            print(
                f"seed {seed:>2}: v1 {row['v1_test_accuracy']:.4f} vs logistic regression "
                f"{row['logistic_regression_test_accuracy']:.4f}; margin {row['margin_combined']:+.4f}; "
                f"gate {row['gate']} ({row['seconds']:.0f} s)",
                flush=True,
            )
    margins = sorted(r["margin_combined"] for r in rows)
    passed = sum(r["gate"] == "passes" for r in rows)
    summary = {
        "seeds": len(rows),
        "gate_passed": passed,
        "margin_min": margins[0],
        "margin_median": statistics.median(margins),
        "margin_max": margins[-1],
        "margins_sorted": margins,
    }
    cfg = DemoConfig.make(not args.search, Path("."), 0)
    result = {
        "benchmark": "demo_seeds",
        "story": "full (with its search)" if args.search else "quick (the full story without its search)",
        "family": cfg.family,
        "hyperparameters": cfg.hyperparameters | {"seed": "per row"},
        "n_labels": cfg.n_labels,
        "search_trials": cfg.search_trials,
        "gate_margin": GATE_MARGIN,
        "torch": torch.__version__,
        "load_average": {"start": load_at_start, "end": list(os.getloadavg())},
        "rows": rows,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{passed}/{len(rows)} seeds pass the gate; margin over the best baseline min {margins[0]:+.4f}, "
        f"median {summary['margin_median']:+.4f}, max {margins[-1]:+.4f}; wrote {args.out}"
    )
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
