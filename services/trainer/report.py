"""A job's report: JSON (every number) and one self-contained HTML page (matplotlib PNGs embedded)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _png(fig) -> str:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _learning_curves(history: dict[str, list[float]]) -> str:
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    epochs = range(1, len(history.get("train_loss", [])) + 1)
    a.plot(epochs, history.get("train_loss", []), label="train")
    a.plot(epochs, history.get("val_loss", []), label="validation")
    a.set(title="loss", xlabel="epoch", yscale="log")
    b.plot(epochs, history.get("train_accuracy", []), label="train")
    b.plot(epochs, history.get("val_accuracy", []), label="validation")
    b.set(title="accuracy", xlabel="epoch")
    a.legend()
    return _png(fig)


def _confusion(cm: list[list[int]], labels: list[str]) -> str:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(cm, cmap="Blues")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel="predicted", ylabel="true")
    ax.set_xticklabels(labels)
    ax.set_yticklabels(labels)
    for i, row in enumerate(cm):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
    ax.set_title("confusion matrix (test)")
    return _png(fig)


def _search(trials: list[dict]) -> str:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for rnd in sorted({t["round"] for t in trials}):
        ts = [t for t in trials if t["round"] == rnd]
        ax.scatter([t["hp"]["lr"] for t in ts], [t["val_score"] for t in ts], label=f"round {rnd}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="validation combined", title="coarse-to-fine search")
    ax.legend()
    return _png(fig)


def _table(header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(folder: Path, report: dict) -> tuple[Path, Path]:
    """Write report.json and report.html into folder; return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "report.json"
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    labels = report["labels"]
    parts = [
        f"<h1>Training job {html.escape(report['job_id'])}</h1>",
        f"<p>model <b>{html.escape(report['model'])}</b> version {html.escape(str(report.get('version', '')))}, "
        f"family {html.escape(report['model_family'])}, snapshot {html.escape(report['snapshot_id'])}, "
        f"git {html.escape(report.get('git_commit', ''))}. "
        f"Combined number: {html.escape(report['combined_metric'])}.</p>",
        "<h2>Baseline comparison (test split)</h2>",
        _table(
            ["model", "accuracy", "macro F1", "combined"],
            [[r["name"], r["accuracy"], r["macro_f1"], r["combined"]] for r in report["comparison"]],
        ),
        "<h2>Bias-variance</h2>",
        _table(["quantity", "value"], [[k, v] for k, v in report["bias_variance"].items()]),
        "<h2>Learning curves (final model)</h2>",
        f'<img src="data:image/png;base64,{_learning_curves(report["history"])}">',
        f'<img src="data:image/png;base64,{_confusion(report["test"]["confusion_matrix"], labels)}">',
        "<h2>Per-class (test)</h2>",
        _table(
            ["class", "precision", "recall", "F1", "support"],
            [
                [lbl, pc["precision"][i], pc["recall"][i], pc["f1"][i], pc["support"][i]]
                for pc in [report["test"]["per_class"]]
                for i, lbl in enumerate(labels)
            ],
        ),
        "<h2>Overfit-one-batch check</h2>",
        _table(["quantity", "value"], [[k, v] for k, v in report["overfit_check"].items()]),
    ]
    if report.get("search", {}).get("trials"):
        parts += [
            "<h2>Hyperparameter search</h2>",
            f'<img src="data:image/png;base64,{_search(report["search"]["trials"])}">',
            _table(
                ["#", "round", "lr", "width", "depth", "weight decay", "val combined", "epochs"],
                [
                    [
                        t["index"],
                        t["round"],
                        t["hp"]["lr"],
                        t["hp"]["width"],
                        t["hp"]["depth"],
                        t["hp"]["weight_decay"],
                        t["val_score"],
                        t["epochs"],
                    ]
                    for t in report["search"]["trials"]
                ],
            ),
        ]
    parts += ["<h2>Export checks</h2>", _table(["check", "value"], [[k, v] for k, v in report["export"].items()])]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Flywheel training report</title><style>"
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    html_path = folder / "report.html"
    html_path.write_text(page)
    return json_path, html_path
