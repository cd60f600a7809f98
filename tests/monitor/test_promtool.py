"""The repository's Prometheus config and rules pass `promtool check` and every alert's unit test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.support.required import require_binary

PROM = Path(__file__).resolve().parents[2] / "infra" / "prometheus"


def _promtool(*args: str, cwd: Path = PROM) -> str:
    promtool = require_binary("promtool", "apt-get install prometheus")
    result = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_check_config() -> None:
    _promtool("check", "config", "prometheus.yml")


def test_check_rules() -> None:
    _promtool("check", "rules", *sorted(str(p.relative_to(PROM)) for p in (PROM / "rules").glob("*.yml")))


def test_rule_unit_tests_pass() -> None:
    out = _promtool("test", "rules", *sorted(str(p.relative_to(PROM)) for p in (PROM / "tests").glob("*.yml")))
    assert "FAILED" not in out


def test_every_alert_has_a_unit_test() -> None:
    alerts = {
        rule["alert"]
        for path in (PROM / "rules").glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tested = {
        case["alertname"]
        for path in (PROM / "tests").glob("*.yml")
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts - tested == set(), f"alerts without a firing unit test: {sorted(alerts - tested)}"
