"""`make loadtest` / `python -m loadtests.run`: a headless Locust run against a running stack.

Reads the gateway's and the broker's addresses from the state `flywheel up` wrote under --home
(or takes them from FLYWHEEL_GATEWAY_URL / FLYWHEEL_GATEWAY_GRPC / FLYWHEEL_KAFKA_BOOTSTRAP), makes a
predict key in the stack's database unless FLYWHEEL_API_KEY is set, and writes CSV, an HTML report
and summary.json under <home>/loadtest/. Exits non-zero when the SLO is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
USERS = ("HttpPredictUser", "GrpcPredictUser", "KafkaLabelUser")


def run_locust(
    gateway_url: str,
    gateway_grpc: str,
    api_key: str,
    kafka: str,
    out_dir: Path,
    users: int = 10,
    rate: float = 10.0,
    duration_s: float = 30.0,
    shape: str = "steady",
    user_classes: tuple[str, ...] = USERS,
    slo_ms: float = 100.0,
) -> tuple[int, dict]:
    """Run Locust headless in a subprocess; return its exit code and the SLO summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / "summary.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "FLYWHEEL_GATEWAY_URL": gateway_url,
        "FLYWHEEL_GATEWAY_GRPC": gateway_grpc,
        "FLYWHEEL_API_KEY": api_key,
        "FLYWHEEL_KAFKA_BOOTSTRAP": kafka,
        "FLYWHEEL_LOAD_USERS": str(users),
        "FLYWHEEL_LOAD_RATE": str(rate),
        "FLYWHEEL_LOAD_DURATION_S": str(duration_s),
        "FLYWHEEL_LOAD_SHAPE": shape,
        "FLYWHEEL_LOAD_SLO_MS": str(slo_ms),
        "FLYWHEEL_LOAD_SUMMARY": str(summary_path),
    }
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--csv", str(out_dir / "locust"), "--html", str(out_dir / "locust.html"),
        "--stop-timeout", "5", *user_classes,
    ]  # fmt: skip
    log = out_dir / "locust.log"
    with open(log, "wb") as fh:
        code = subprocess.call(cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=duration_s + 120)
    if not summary_path.exists():
        raise RuntimeError(f"locust wrote no summary (exit {code}); see {log}")
    return code, json.loads(summary_path.read_text())


def _from_state(home: Path) -> tuple[str, str, str]:
    from services.devstack.supervisor import read_state

    url = grpc = kafka = ""
    for c in read_state(home):
        if c.name == "gateway":
            found = c.roles()
            url, grpc = f"http://{found['http']}", found["grpc"]
        elif c.kind == "broker":
            kafka = c.address
    return url, grpc, kafka


def _make_key(home: Path) -> str:
    from services.config import CommonSettings, load_settings
    from services.gateway.keys import KeyStore
    from services.storage import Database, migrate

    url = load_settings(CommonSettings, home=home).resolved_database_url()
    migrate(url)
    return KeyStore(Database(url)).create("loadtest", ["predict"], rate_per_s=10_000, burst=10_000)


def _model_not_served(gateway_url: str, key: str, model: str) -> str:
    """Empty when the gateway serves `model`; otherwise what is wrong, in a sentence."""
    import httpx

    try:
        resp = httpx.get(
            f"{gateway_url}/v2/models/{model}/ready", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
    except httpx.HTTPError as exc:
        return f"the gateway at {gateway_url} does not answer ({exc})"
    if resp.status_code == 200:
        return ""
    return f"the gateway at {gateway_url} serves no ready model '{model}' (HTTP {resp.status_code})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.run", description=__doc__)
    p.add_argument("--home", default=os.environ.get("FLYWHEEL_HOME", ".flywheel"), help="the stack's FLYWHEEL_HOME")
    p.add_argument("--users", type=int, default=int(os.environ.get("FLYWHEEL_LOAD_USERS", "10")))
    p.add_argument(
        "--rate", type=float, default=float(os.environ.get("FLYWHEEL_LOAD_RATE", "10")), help="req/s per user"
    )
    p.add_argument("--duration", type=float, default=float(os.environ.get("FLYWHEEL_LOAD_DURATION_S", "30")))
    p.add_argument(
        "--shape", choices=["steady", "step", "spike"], default=os.environ.get("FLYWHEEL_LOAD_SHAPE", "steady")
    )
    p.add_argument("--slo-ms", type=float, default=float(os.environ.get("FLYWHEEL_LOAD_SLO_MS", "100")))
    p.add_argument("users_classes", nargs="*", default=list(USERS), help=f"Locust users (default: {' '.join(USERS)})")
    args = p.parse_args(argv)
    home = Path(args.home)
    url, grpc, kafka = _from_state(home)
    url = os.environ.get("FLYWHEEL_GATEWAY_URL", url)
    grpc = os.environ.get("FLYWHEEL_GATEWAY_GRPC", grpc)
    kafka = os.environ.get("FLYWHEEL_KAFKA_BOOTSTRAP", kafka)
    if not url:
        print(f"no running gateway found in {home}/run/state.json: start one with `flywheel up`, or set "
              "FLYWHEEL_GATEWAY_URL, FLYWHEEL_GATEWAY_GRPC and FLYWHEEL_API_KEY", file=sys.stderr)  # fmt: skip
        return 2
    key = os.environ.get("FLYWHEEL_API_KEY") or _make_key(home)
    model = os.environ.get("FLYWHEEL_MODEL", "digits")
    problem = _model_not_served(url, key, model)
    if problem:
        print(
            f"{problem}: nothing to load-test. Serve a model first: `make up` (= `flywheel up --with-example-model`) "
            f"trains and serves the example model '{model}'; or promote one of yours and set FLYWHEEL_MODEL",
            file=sys.stderr,
        )
        return 2
    out = home / "loadtest"
    code, summary = run_locust(
        url,
        grpc,
        key,
        kafka,
        out,
        args.users,
        args.rate,
        args.duration,
        args.shape,
        tuple(args.users_classes),
        args.slo_ms,
    )
    print(json.dumps(summary, indent=2))
    print(f"CSV, HTML and summary in {out}/")
    return code


if __name__ == "__main__":
    sys.exit(main())
