"""Trainer benchmark: time to train and export the digits model on CPU, and the accuracy reached.

    python -m bench.train [--threads N] [--seeds 0,1,2] [--exporter dynamo|torchscript]

Each configuration is one full training job as the service runs it (snapshot → baselines →
overfit check → train with early stopping → ONNX + int8 ONNX + TorchScript + .mar export →
registry → report), timed end to end. The snapshot is scikit-learn's digits written in the lake's
format (70/15/15 by a salted hash of the example id). Hyperparameters are those a coarse-to-fine
search found (the `search` row runs such a search within a budget to show it). Target: ≥ 0.98 test
accuracy in under a minute. Prints a table and writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from services.storage import Database, migrate
from services.trainer.data.sklearn_digits import write_digits_snapshot
from services.trainer.export import ExportOptions
from services.trainer.job_run import JobContext, JobSpec, git_commit, run_job
from services.trainer.registry import Registry
from services.trainer.tables import MIGRATIONS
from services.trainer.training.metrics import CombinedMetric

RESULTS = Path(__file__).resolve().parents[1] / "results" / "train.json"
TARGET_ACCURACY, TARGET_SECONDS = 0.98, 60.0

CONFIGS = {
    "digits_mlp (tuned)": ("digits_mlp", {"lr": "0.001", "weight_decay": "0.0001", "augment_shift": "0"}, 0),
    "digits_cnn (tuned)": ("digits_cnn", {"lr": "0.001"}, 0),
    "digits_mlp (notes' defaults)": ("digits_mlp", {"augment_shift": "0"}, 0),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: OpenMP spinning on a shared machine inflates times badly)",
    )
    parser.add_argument("--seeds", default="0,1", help="one job per seed and configuration")
    parser.add_argument("--exporter", default="dynamo", choices=["dynamo", "torchscript"])
    parser.add_argument("--search-budget", type=float, default=30.0, help="seconds for the search row (0: skip)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    load_at_start = list(os.getloadavg())
    console = Console()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        uri = write_digits_snapshot(tmp / "lake", "snap-digits").as_uri()
        url = f"sqlite:///{tmp / 'bench.db'}"
        migrate(url, [MIGRATIONS])
        db = Database(url)
        registry = Registry(db, repository_uri=(tmp / "models").as_uri())
        ctx = JobContext(
            repository=tmp / "models",
            reports=tmp / "reports",
            registry=registry,
            combined=CombinedMetric.parse("weighted:accuracy=0.5,macro_f1=0.5"),
            export=ExportOptions(exporter=args.exporter),
            threads=args.threads,
            git_commit=git_commit(),
        )
        # Warm-up (imports, first export) so the first timed job is not charged for them.
        run_job(JobSpec("warmup", "warmup", "digits_mlp", "snap-digits", uri, {"max_epochs": "1"}), ctx)
        plan = [(name, fam, hp, 0, seed) for name, (fam, hp, _) in CONFIGS.items() for seed in seeds]
        if args.search_budget > 0:
            plan.append(("digits_mlp coarse-to-fine search (8 trials)", "digits_mlp", {"augment_shift": "0"}, 8, 0))
        for name, fam, hp, trials, seed in plan:
            spec = JobSpec(
                uuid.uuid4().hex[:12],
                fam.replace("_", "-"),
                fam,
                "snap-digits",
                uri,
                {**hp, "seed": str(seed)},
                search_trials=trials,
                search_rounds=2,
                budget_s=args.search_budget if trials else 0.0,
            )
            start = time.perf_counter()
            out = run_job(spec, ctx)
            seconds = time.perf_counter() - start
            m = out.metrics
            rows.append(
                {
                    "config": name,
                    "seed": seed,
                    "seconds": round(seconds, 2),
                    "test_accuracy": round(m["test_accuracy"], 4),
                    "test_macro_f1": round(m["test_macro_f1"], 4),
                    "logreg_test_accuracy": round(m["baseline_logistic_regression_test_accuracy"], 4),
                    "majority_test_accuracy": round(m["baseline_majority_test_accuracy"], 4),
                    "int8_accuracy_change": round(m.get("export_int8_accuracy_change", float("nan")), 4),
                    "epochs": out.report["epochs_run"],
                    "hyperparameters": out.report["hyperparameters"],
                }
            )
            console.print(f"{name} seed {seed}: {m['test_accuracy']:.4f} in {seconds:.1f}s")
        db.close()
    table = Table(title=f"digits: train + export on CPU ({args.threads} threads, {args.exporter} ONNX exporter)")
    for col in ("config", "seed", "seconds", "test acc", "macro F1", "logreg acc", "majority acc", "int8 Δacc"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["config"],
            str(r["seed"]),
            f"{r['seconds']:.1f}",
            f"{r['test_accuracy']:.4f}",
            f"{r['test_macro_f1']:.4f}",
            f"{r['logreg_test_accuracy']:.4f}",
            f"{r['majority_test_accuracy']:.4f}",
            f"{r['int8_accuracy_change']:+.4f}",
        )
    console.print(table)
    summary = {}
    for name in CONFIGS:
        rs = [r for r in rows if r["config"] == name]
        summary[name] = {
            "mean_test_accuracy": round(statistics.mean(r["test_accuracy"] for r in rs), 4),
            "min_test_accuracy": min(r["test_accuracy"] for r in rs),
            "mean_seconds": round(statistics.mean(r["seconds"] for r in rs), 2),
            "max_seconds": max(r["seconds"] for r in rs),
            "meets_target": all(r["test_accuracy"] >= TARGET_ACCURACY and r["seconds"] < TARGET_SECONDS for r in rs),
        }
    result = {
        "benchmark": "train",
        "target": {"test_accuracy": TARGET_ACCURACY, "seconds": TARGET_SECONDS},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            # The machine is shared: a load average above the CPU count means the times are inflated.
            "load_average_at_start": load_at_start,
            "load_average_at_end": list(os.getloadavg()),
        },
        "threads": args.threads,
        "exporter": args.exporter,
        "rows": rows,
        "summary": summary,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = RESULTS.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    tmp_out.replace(RESULTS)
    for name, s in summary.items():
        verdict = "[green]meets[/green]" if s["meets_target"] else "[yellow]misses[/yellow]"
        console.print(
            f"{name}: mean acc {s['mean_test_accuracy']:.4f} (min {s['min_test_accuracy']:.4f}), "
            f"mean {s['mean_seconds']:.1f}s → {verdict} the target"
        )
    console.print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
