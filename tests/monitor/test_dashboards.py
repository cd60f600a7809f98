"""Grafana dashboards: valid JSON, every query is PromQL that promtool accepts, and every metric a
panel reads is exported by a service or recorded by a rule."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.support.required import require_binary

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "infra" / "grafana").glob("*.json"))
_NAME = re.compile(r"\b((?:flywheel_|model:)[a-zA-Z0-9_:]+)")


def _exprs() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                out.append((path.name, panel["title"], target["expr"]))
    return out


def _known_metrics() -> set[str]:
    names: set[str] = set()
    for src in (ROOT / "services").rglob("*.py"):
        for name in re.findall(r'"(flywheel_[a-z0-9_]+)"', src.read_text()):
            names |= {name, f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    for rules in (ROOT / "infra" / "prometheus" / "rules").glob("*.yml"):
        for group in yaml.safe_load(rules.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"] if "record" in r}
    return names


def test_three_dashboards_with_panels() -> None:
    assert {p.stem for p in DASHBOARDS} >= {"serving", "drift", "ingest-lake"}
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] and board["panels"], path
        assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


def test_every_panel_reads_metrics_that_exist() -> None:
    known = _known_metrics()
    missing = {
        (board, title, name) for board, title, expr in _exprs() for name in _NAME.findall(expr) if name not in known
    }
    assert not missing, f"panels on metrics nobody exports: {sorted(missing)}"


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    require_binary("promtool", "apt-get install prometheus")
    rules = [
        {"record": f"dashboard:check_{i}", "expr": expr.replace("$model", ".*")}
        for i, (_, _, expr) in enumerate(_exprs())
    ]
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
