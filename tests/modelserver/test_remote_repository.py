"""The model server on a remote model repository (`s3://`, a real Versity S3 Gateway: tests/support/s3.py).

Versions are published the way the trainer publishes them (services/storage/model_store.py), and the
server, one process for the whole test, pulls, checks and hot-swaps them: v1 served, then v2 without a
restart; a version whose file does not match its manifest refused (a log line, never served) until a
re-upload heals it. Bad keys stop the server before it serves, with a message naming URL, endpoint, key id.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as thttp

from services.devstack.ports import free_port
from services.storage.model_store import publish_version
from services.storage.s3 import open_bucket
from tests.modelserver.artifacts import add_onnx_version, expected_probabilities, write_onnx_model
from tests.modelserver.conftest import ROOT, Server, running_server
from tests.support.credentials import service_env
from tests.support.s3 import S3Server, running_s3_server
from tests.support.waiting import wait_until

POLL_S = 0.5


@pytest.fixture
def aws_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)  # running_server passes the environment on
    return s3_server


def _served_version(server: Server) -> str:
    """Infer once; check the answer is that version's, return the version that answered."""
    x = np.random.default_rng(7).random((2, 64), dtype=np.float32)
    i = thttp.InferInput("features", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    result = server.http_client().infer("digits", [i])
    version = str(result.get_response()["model_version"])
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), expected_probabilities(int(version), x), rtol=1e-4, atol=1e-6
    )
    return version


def _log(server: Server) -> str:
    return server.log.read_text(errors="replace")


def test_versions_published_to_s3_are_pulled_checked_and_hot_swapped(aws_env: S3Server, tmp_path: Path) -> None:
    url = f"s3://{aws_env.bucket()}/models"
    fs, root = open_bucket(url, aws_env.settings())
    source = tmp_path / "trained"  # the trainer's local repository
    write_onnx_model(source, "digits", [1], num_versions=1)
    publish_version(source, "digits", 1, fs, root)
    cache = tmp_path / "cache"

    with running_server(cache, tmp_path, remote_repository=url, remote_poll_s=POLL_S) as server:
        pid = server.proc.pid
        assert _served_version(server) == "1"  # pulled before start-up finished
        assert (cache / "digits" / "1" / "model.onnx").is_file()

        # v2: published while the server runs, served by the same process without a restart.
        add_onnx_version(source, "digits", 2)
        publish_version(source, "digits", 2, fs, root)
        wait_until(lambda: _served_version(server) == "2", 60, server.proc, POLL_S / 2, "v2 served")
        assert server.proc.pid == pid and server.proc.poll() is None

        # v3 arrives corrupt: one byte of model.onnx differs from what the manifest says.
        add_onnx_version(source, "digits", 3)
        publish_version(source, "digits", 3, fs, root)
        good = fs.cat_file(f"{root}/digits/3/model.onnx")
        fs.pipe_file(f"{root}/digits/3/model.onnx", good[:-1] + bytes([good[-1] ^ 0xFF]))
        wait_until(lambda: _log(server).count("model version refused") >= 2, 60, server.proc, 0.2, "v3 refused twice")
        refusal = next(line for line in _log(server).splitlines() if "model version refused" in line)
        assert '"version": 3' in refusal and "model.onnx does not match its manifest" in refusal, refusal
        assert _served_version(server) == "2"  # never v3
        assert not (cache / "digits" / "3").exists()

        # Healed by a re-upload: the next poll pulls it and swaps it in.
        fs.pipe_file(f"{root}/digits/3/model.onnx", good)
        wait_until(lambda: _served_version(server) == "3", 60, server.proc, POLL_S / 2, "v3 served once healed")
        assert server.proc.pid == pid
        index = {
            (m["name"], m.get("version", "")): m["state"] for m in server.http_client().get_model_repository_index()
        }
        assert index == {("digits", "3"): "READY"}  # latest 1: older versions retired


def test_polling_outlives_an_outage_of_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 server stops under a running model server (which keeps serving what it has, and says so in
    its log) and comes back: the next version published is pulled and served by the same process."""
    source = tmp_path / "trained"
    write_onnx_model(source, "digits", [1], num_versions=1)
    with running_s3_server(tmp_path / "s3") as s3:
        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)
        url = f"s3://{s3.bucket()}/models"
        fs, root = open_bucket(url, s3.settings())
        publish_version(source, "digits", 1, fs, root)
        server_cm = running_server(tmp_path / "cache", tmp_path, remote_repository=url, remote_poll_s=POLL_S)
        server = server_cm.__enter__()
    try:
        assert _served_version(server) == "1"
        wait_until(lambda: "remote model repository not reachable" in _log(server), 60, server.proc, 0.2, "outage")
        assert _served_version(server) == "1"
        with running_s3_server(tmp_path / "s3", again=s3):
            add_onnx_version(source, "digits", 2)
            publish_version(source, "digits", 2, open_bucket(url, s3.settings())[0], root)
            wait_until(lambda: _served_version(server) == "2", 60, server.proc, POLL_S / 2, "v2 served after it")
    finally:
        server_cm.__exit__(None, None, None)


@pytest.mark.parametrize("problem", ["refused keys", "unreachable endpoint"])
def test_an_unusable_remote_repository_stops_the_server_with_a_clear_message(
    aws_env: S3Server, tmp_path: Path, problem: str
) -> None:
    url = f"s3://{aws_env.bucket()}/models"
    bad = (
        {"AWS_SECRET_ACCESS_KEY": "a-wrong-secret"}
        if problem == "refused keys"
        else {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "FLYWHEEL_S3_CONNECT_TIMEOUT_S": "1"}
    )
    env = {
        **os.environ,
        **aws_env.env(**bad),
        **service_env("modelserver"),
        "FLYWHEEL_MODELSERVER_MODEL_REPOSITORY": str(tmp_path / "cache"),
        "FLYWHEEL_MODELSERVER_REMOTE_REPOSITORY": url,
        "FLYWHEEL_MODELSERVER_HTTP_PORT": "0",
        "FLYWHEEL_MODELSERVER_GRPC_PORT": "0",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "services.modelserver"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    out = proc.stderr + proc.stdout
    assert "cannot start the model server" in out and url in out, out[-2000:]
    assert env["AWS_ENDPOINT_URL"] in out and aws_env.access_key in out, out[-2000:]
    assert ("refused" if problem == "refused keys" else "unreachable") in out, out[-2000:]
    assert "a-wrong-secret" not in out and aws_env.secret_key not in out
    assert "listening" not in out  # stopped before opening a port
