"""The demo's summary: a table on screen, summary.json, and an HTML report with plots."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from services.cli.demo.story import Results


def summary_rows(r: Results) -> list[tuple[str, str]]:
    v = r.values
    load = v.get("load", {})
    baselines = v.get("baselines", {})
    best_baseline = max(baselines.values()) if baselines else math.nan
    rows = [
        ("seed (`--seed`)", str(v.get("seed"))),
        (
            "labels ingested (webhook + Kafka) / in the lake / lost",
            f"{v.get('labels_sent')} / {v.get('labels_in_lake')} / {v.get('labels_lost')}",
        ),
        ("malformed events → dead-letter topic", str(v.get("dead_lettered"))),
        (f"v{v.get('v1')} test accuracy vs best baseline", f"{_f(v.get('v1_test_accuracy'))} vs {_f(best_baseline)}"),
        (
            "live accuracy through the gateway (HTTP / gRPC)",
            f"{_f(v.get('live_accuracy_http'))} / {_f(v.get('live_accuracy_grpc'))}",
        ),
        (
            "load: requests, p50, p99",
            f"{load.get('requests')} req, {_f(load.get('p50_ms'), 1)} ms, {_f(load.get('p99_ms'), 1)} ms",
        ),
        (
            f"goodput at the {_f(load.get('slo_ms'), 0)} ms SLO",
            f"{_f(load.get('goodput_rps'), 1)}/s of {_f(load.get('throughput_rps'), 1)}/s "
            f"({'met' if load.get('slo_met') else 'missed'})",
        ),
        (
            "clean windows tested / drifted (false alarms)",
            f"{v.get('clean_windows')} / {v.get('clean_windows_drifted')}",
        ),
        ("synthetic (Locust) predictions the monitor left out", str(v.get("synthetic_predictions_ignored"))),
        (
            "drift detected after",
            f"{v.get('drift_detected_after_events')} shifted predictions, {_f(v.get('drift_detected_after_s'), 1)} s",
        ),
        (
            "Prometheus alert firing after",
            "not run" if v.get("alert_fired_after_s") is None else f"{_f(v['alert_fired_after_s'], 1)} s",
        ),
        (f"v{v.get('v1')} accuracy on shifted inputs", _f(v.get("v1_shifted_accuracy"))),
        (f"v{v.get('v2')} (retrained) test accuracy", _f(v.get("v2_metrics", {}).get("test_accuracy"))),
        (
            "canary traffic (version: requests)",
            ", ".join(f"v{k}: {n}" for k, n in sorted(v.get("canary_split", {}).items())) or "-",
        ),
        ("gate", str(v.get("gate"))),
        ("in production now", f"v{v.get('production')}"),
    ]
    return rows


def _f(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{float(x):.{digits}f}"


def print_summary(console: Console, r: Results) -> None:
    table = Table(title="Flywheel demo: one turn of the flywheel", show_lines=False)
    table.add_column("what")
    table.add_column("measured", justify="right")
    for what, value in summary_rows(r):
        table.add_row(what, value)
    console.print(table)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _plots(r: Results) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = r.values
    plots = []
    names = [f"baseline: {k}" for k in v.get("baselines", {})] + [f"v{v.get('v1')}"]
    values = [*v.get("baselines", {}).values(), v.get("v1_test_accuracy") or 0.0]
    if v.get("v2_metrics"):
        names.append(f"v{v['v2']} (retrained)")
        values.append(v["v2_metrics"].get("test_accuracy", 0.0))
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(
        names,
        values,
        color=["#bbb"] * len(v.get("baselines", {})) + ["#2a7"] * (len(names) - len(v.get("baselines", {}))),
    )
    ax.set_xlim(0, 1)
    ax.set_xlabel("test accuracy")
    plots.append(("Accuracy vs baselines", _png(fig)))
    plt.close(fig)

    if r.drift_timeline:
        fig, ax = plt.subplots(figsize=(6, 3))
        t, share = zip(*r.drift_timeline, strict=True)
        ax.plot(t, share, marker=".")
        if v.get("drift_detected_after_s") is not None:
            ax.axvline(v["drift_detected_after_s"], color="r", linestyle="--", label="drift persisting")
            ax.legend()
        ax.set_xlabel("seconds since the shift")
        ax.set_ylabel("share of tests drifted")
        plots.append(("Drift after the shift (monitor, last count window)", _png(fig)))
        plt.close(fig)

    load = v.get("load")
    if load:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.bar(["p50", "p99", "SLO"], [load["p50_ms"], load["p99_ms"], load["slo_ms"]], color=["#27a", "#27a", "#a72"])
        ax.set_ylabel("ms")
        plots.append(("Latency under load (Locust, HTTP + gRPC)", _png(fig)))
        plt.close(fig)
    return plots


def write_report(out_dir: Path, r: Results, config: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(
        json.dumps(
            {"config": config, "steps": r.steps, "results": r.values, "drift_timeline": r.drift_timeline},
            indent=2,
            default=str,
        )
    )
    rows = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td></tr>" for a, b in summary_rows(r))
    steps = "".join(f"<li>{html.escape(s)} <small>(at {t:.1f} s)</small></li>" for s, t in r.steps)
    figures = "".join(f"<h2>{html.escape(t)}</h2><img src='data:image/png;base64,{b}'/>" for t, b in _plots(r))
    links = "".join(
        f"<li>{html.escape(name)}: <code>{html.escape(str(r.get(key)))}</code></li>"
        for name, key in (
            ("training report v1", "v1_report"),
            ("training report v2", "v2_report"),
            ("Locust report", "load_html"),
        )
        if r.get(key)
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Flywheel demo</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}
td{{padding:2px 12px;border-bottom:1px solid #ddd}}</style></head>
<body><h1>Flywheel demo</h1><ol>{steps}</ol><table>{rows}</table>{figures}
<h2>More</h2><ul>{links}</ul></body></html>"""
    path = out_dir / "report.html"
    path.write_text(page)
    return path
