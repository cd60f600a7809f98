"""Start and stop each served system as its own process tree, on free ports, and wait until it answers.

Each `start_*` is a context manager yielding an Endpoint; leaving it sends SIGTERM to the
process group it started (TorchServe's Java frontend and its Python workers included).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.devstack.credentials import StackCredentials
from services.devstack.ports import free_port
from services.devstack.stack import spec

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("FLYWHEEL_TOOLS", ROOT / ".tools"))


class SystemUnavailable(RuntimeError):
    """The system cannot run on this machine (missing binary, no Java…); the bench skips it."""


@dataclass
class Endpoint:
    protocol: str  # loadgen protocol: grpc | v2-http | torchserve
    target: str  # host:port
    token: str = ""  # the service credential the system admits (Flywheel's model server), "" for the others
    pid: int = 0  # the server process (its group leader): the perf bench pins and meters its tree
    http: str = ""  # host:port of its HTTP API (v2 REST; TorchServe's inference API)
    grpc: str = ""  # host:port of its gRPC API, "" if none


def _wait(proc: subprocess.Popen, ready, what: str, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemUnavailable(f"{what} exited with {proc.returncode}: {log.read_text()[-1500:]}")
        try:
            if ready():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise SystemUnavailable(f"{what} not ready after {timeout_s}s: {log.read_text()[-1500:]}")


def _stop(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:  # workers the leader left behind in its group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def _process(cmd: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> Iterator[subprocess.Popen]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        _stop(proc)


def _ok(url: str, method: str = "GET", content: bytes | None = None) -> bool:
    return httpx.request(method, url, content=content, timeout=5).status_code == 200


@contextmanager
def start_flywheel(repo: Path, workdir: Path, batching: str, protocol: str = "grpc") -> Iterator[Endpoint]:
    http, grpc = free_port(), free_port()
    cmd = [sys.executable, "-m", "services.modelserver", "--model-repository", str(repo)]
    cmd += ["--http-port", str(http), "--grpc-port", str(grpc), "--batching", batching, "--intra-op-threads", "1"]
    creds = StackCredentials.generate()  # the model server admits callers with a credential: the load generator's
    env = {**os.environ, "FLYWHEEL_LOG_LEVEL": "WARNING", **creds.service_env(spec("modelserver"))}
    log = workdir / f"flywheel-{batching}.log"
    with _process(cmd, env, log) as proc:
        _wait(proc, lambda: _ok(f"http://127.0.0.1:{http}/readyz"), f"flywheel ({batching})", log)
        target = f"127.0.0.1:{http if protocol == 'v2-http' else grpc}"
        yield Endpoint(protocol, target, creds.token("operator"), proc.pid, f"127.0.0.1:{http}", f"127.0.0.1:{grpc}")


def triton_paths() -> tuple[Path, Path]:
    base = TOOLS / "triton" / "pytriton" / "tritonserver"
    server = base / "bin" / "tritonserver"
    if not server.exists():
        raise SystemUnavailable(f"{server} is missing: run `make tools`")
    return base, server


@contextmanager
def start_triton(repo: Path, workdir: Path, protocol: str = "grpc") -> Iterator[Endpoint]:
    base, server = triton_paths()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = base / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise SystemUnavailable(f"nvidia-pytriton has no Python backend stub for Python {version}")
    # The Python backend, with the stub for this interpreter's version.
    backends = workdir / "triton-backends" / "python"
    backends.mkdir(parents=True, exist_ok=True)
    for src in (
        base / "backends" / "python" / "libtriton_python.so",
        base / "backends/python/triton_python_backend_utils.py",
        stub,
    ):
        dst = backends / src.name
        if not dst.exists():
            dst.symlink_to(src.resolve())
    http, grpc, metrics = free_port(), free_port(), free_port()
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env = {
        **os.environ,
        # The stub links libpython of this interpreter's version: use the interpreter's own.
        "LD_LIBRARY_PATH": os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p),
        # The stub's embedded Python ignores PYTHONPATH; triton_model.py reads this instead.
        "FLYWHEEL_BENCH_SYS_PATH": os.pathsep.join(p for p in sys.path if p),
    }
    cmd = [str(server), "--model-repository", str(repo), "--backend-directory", str(backends.parent)]
    cmd += ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    cmd += ["--allow-metrics", "false", "--log-info", "false", "--log-warning", "false", "--exit-timeout-secs", "5"]
    log = workdir / "triton.log"
    with _process(cmd, env, log) as proc:
        _wait(proc, lambda: _ok(f"http://127.0.0.1:{http}/v2/health/ready"), "tritonserver", log)
        target = f"127.0.0.1:{http if protocol == 'v2-http' else grpc}"
        yield Endpoint(protocol, target, "", proc.pid, f"127.0.0.1:{http}", f"127.0.0.1:{grpc}")


LOG4J = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="ERROR">
  <Appenders><Console name="STDOUT" target="SYSTEM_OUT"><PatternLayout pattern="%d %p %c: %m%n"/></Console></Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="OFF" additivity="false"/>
    <Logger name="MODEL_LOG" level="OFF" additivity="false"/>
    <Logger name="MODEL_METRICS" level="OFF" additivity="false"/>
    <Logger name="TS_METRICS" level="OFF" additivity="false"/>
    <Root level="WARN"><AppenderRef ref="STDOUT"/></Root>
  </Loggers>
</Configuration>
"""


@contextmanager
def start_torchserve(
    store: Path, workdir: Path, models: dict[str, tuple[int, ...]], device: str, max_batch_delay_ms: int = 5
) -> Iterator[Endpoint]:
    exe = Path(sys.executable).with_name("torchserve")
    if not exe.exists():
        raise SystemUnavailable("torchserve is not installed (make setup installs torchserve==0.12.0)")
    if shutil.which("java") is None:
        raise SystemUnavailable("TorchServe needs Java, and no `java` is on PATH")
    inference, management, metrics = free_port(), free_port(), free_port()
    (workdir / "log4j2.xml").write_text(LOG4J)
    per_model = {
        name: {
            "1.0": {
                "defaultVersion": True,
                "marName": f"{name}.mar",
                "minWorkers": 1,
                "maxWorkers": 1,
                "batchSize": 16,
                "maxBatchDelay": max_batch_delay_ms,
                "responseTimeout": 120,
            }
        }
        for name in models
    }
    config = workdir / "config.properties"
    config.write_text(
        "\n".join(
            [
                f"inference_address=http://127.0.0.1:{inference}",
                f"management_address=http://127.0.0.1:{management}",
                f"metrics_address=http://127.0.0.1:{metrics}",
                f"model_store={store}",
                "load_models=" + ",".join(f"{n}.mar" for n in models),
                "models=" + json.dumps(per_model),
                "disable_token_authorization=true",
                "enable_metrics_api=false",
                "async_logging=true",
                "install_py_dep_per_model=false",
                f"vmargs=-Xmx1g -Dlog4j.configurationFile=file://{workdir / 'log4j2.xml'}",
                "",
            ]
        )
    )
    env = {**os.environ, "LOG_LOCATION": str(workdir / "ts-logs"), "METRICS_LOCATION": str(workdir / "ts-logs")}
    env["BENCH_DEVICE"] = device
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [str(exe), "--start", "--foreground", "--ncs", "--ts-config", str(config), "--model-store", str(store)]
    cmd += ["--disable-token-auth"]
    log = workdir / "torchserve.log"

    def ready() -> bool:
        import numpy as np

        for name, shape in models.items():
            body = np.zeros(shape, np.float32).tobytes()
            if not _ok(f"http://127.0.0.1:{inference}/predictions/{name}", "POST", body):
                return False
        return True

    with _process(cmd, env, log, cwd=workdir) as proc:
        _wait(proc, ready, "torchserve", log)
        target = f"127.0.0.1:{inference}"
        yield Endpoint("torchserve", target, "", proc.pid, target)
