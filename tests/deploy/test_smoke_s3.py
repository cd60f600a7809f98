"""`helm test` with the stores on s3 (charts/flywheel/files/smoke_test.py), its s3 steps against a real
S3 server (Versity S3 Gateway, tests/support/s3.py): the version it publishes is one the model server's
pull accepts (checked against its manifest), its next version follows the published ones, its clean-up
removes the version, and it finds the lake's prediction Parquet under an s3:// lake and nothing else.
The rest of the script needs a running release: tests/k8s runs it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from services.modelserver.remote import RemoteRepository
from services.storage import model_store
from services.storage.s3 import open_bucket
from tests.deploy.conftest import CHART
from tests.support.s3 import S3Server


@pytest.fixture
def smoke(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)  # as the chart sets them in the helm test's pod
    spec = importlib.util.spec_from_file_location("smoke_test", CHART / "files" / "smoke_test.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_published_smoke_model_is_pulled_by_the_model_server(
    smoke: ModuleType, s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{s3_server.bucket()}/models"
    monkeypatch.setenv("SMOKE_REMOTE_MODEL_REPOSITORY", url)
    remote = smoke.remote_repository()
    assert smoke.next_remote_version(remote) == 1
    local = tmp_path / "smoke-models"
    version = smoke.write_model(local, smoke.next_remote_version(remote))
    model_store.publish_version(local, smoke.MODEL, version, *remote)
    assert smoke.next_remote_version(remote) == 2

    cache = tmp_path / "cache"
    pulled = RemoteRepository(url, cache, settings=s3_server.settings()).pull()
    assert pulled == {smoke.MODEL: [1]}
    assert (cache / smoke.MODEL / "1" / "model.onnx").read_bytes() == (
        local / smoke.MODEL / "1" / "model.onnx"
    ).read_bytes()

    fs, root = remote
    fs.rm(f"{root}/{smoke.MODEL}/{version}", recursive=True)  # the script's clean-up
    assert smoke.next_remote_version(remote) == 1


def test_lake_parquet_finds_the_predictions_under_an_s3_lake(smoke: ModuleType, s3_server: S3Server) -> None:
    fs, root = open_bucket(f"s3://{s3_server.bucket()}/lake", s3_server.settings())
    assert smoke.lake_parquet(f"s3://{root}") == []
    fs.pipe_file(f"{root}/topics/flywheel.labels/date=2026-12-01/a.parquet", b"x")
    assert smoke.lake_parquet(f"s3://{root}") == []
    fs.pipe_file(f"{root}/topics/flywheel.predictions/date=2026-12-01/b.parquet", b"x")
    (found,) = smoke.lake_parquet(f"s3://{root}")
    assert found.endswith("flywheel.predictions/date=2026-12-01/b.parquet")
