"""Triton's perf_analyzer drives a real Flywheel model server over gRPC, unchanged.

The binary comes from the tritonclient wheel (`make tools` puts it in .tools/perf_analyzer with
the libb64/libcudart it loads from the nvidia-pytriton wheel). Load is bounded: concurrency 1
then 4, short time windows, a few trials, and a hard timeout on the process.
"""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest

from tests.modelserver.artifacts import write_onnx_model
from tests.modelserver.conftest import ROOT, running_server

PERF_ANALYZER = ROOT / ".tools" / "perf_analyzer" / "perf_analyzer"
LIBS = ROOT / ".tools" / "perf_analyzer" / "lib"


def _runnable() -> str | None:
    """None when perf_analyzer runs here, else why not."""
    if not PERF_ANALYZER.exists():
        return f"{PERF_ANALYZER} is missing: run `make tools`"
    try:
        out = subprocess.run([str(PERF_ANALYZER), "--version"], env=_env(), capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"perf_analyzer cannot start: {exc}"
    if out.returncode != 0:
        return f"perf_analyzer cannot run here: {(out.stderr or out.stdout).strip()[-400:]}"
    return None


def _env() -> dict[str, str]:
    return {**os.environ, "LD_LIBRARY_PATH": f"{LIBS}:{os.environ.get('LD_LIBRARY_PATH', '')}"}


@pytest.fixture(scope="module")
def perf_analyzer() -> Path:
    reason = _runnable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return PERF_ANALYZER


def test_perf_analyzer_measures_throughput_over_grpc(perf_analyzer: Path, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_onnx_model(repo, "digits", [1], num_versions=1)
    report = tmp_path / "perf.csv"
    with running_server(repo, tmp_path) as server:
        out = subprocess.run(
            [
                str(perf_analyzer),
                "-m",
                "digits",
                "-i",
                "grpc",
                "-u",
                server.grpc,
                "-H",  # sent as gRPC metadata too: the model server admits the operator's credential
                f"authorization:{server.headers['authorization']}",
                "-b",
                "1",
                "--concurrency-range",
                "1:4:3",
                "--measurement-mode",
                "time_windows",
                "--measurement-interval",
                "1000",
                "--max-trials",
                "6",
                "--stability-percentage",
                "100",
                "-f",
                str(report),
            ],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        served = server.metric("flywheel_modelserver_requests_total", model="digits")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Throughput:" in out.stdout, out.stdout[-3000:]
    rows = list(csv.DictReader(report.open()))
    assert sorted(int(r["Concurrency"]) for r in rows) == [1, 4], rows
    assert all(float(r["Inferences/Second"]) > 0 for r in rows), rows
    assert served > 0
    print(out.stdout[-1500:])
