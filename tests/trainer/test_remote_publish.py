"""Registering a version publishes it to a remote model repository on a real S3 server (tests/support/s3.py):
every file, then a manifest with each file's size and sha256, written last; no version is recorded or
announced unless its publish succeeded; an unusable bucket stops the trainer's start-up."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from services.config import ConfigError
from services.storage import Database, migrate
from services.storage.model_store import MANIFEST, RemotePublisher, fetch_version, remote_versions
from services.storage.s3 import s3_filesystem
from services.trainer.registry import Registry, VersionRecord, remote_publisher
from services.trainer.tables import MIGRATIONS
from tests.support.s3 import S3Server

CONFIG = 'name: "digits"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'


@pytest.fixture
def aws_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


def _local_version(repo: Path, version: int, model: str = "digits") -> dict[str, bytes]:
    """A version folder as the exporter leaves it (any bytes do: publishing does not parse them)."""
    files = {
        "model.onnx": f"onnx bytes of {model} v{version}".encode() * 1000,
        "flywheel.json": json.dumps({"version": version}).encode(),
        "extra/encoders.json": b"{}",
    }
    (repo / model).mkdir(parents=True, exist_ok=True)
    (repo / model / "config.pbtxt").write_text(CONFIG.replace('"digits"', f'"{model}"'))
    for rel, data in files.items():
        path = repo / model / str(version) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return {**files, "config.pbtxt": CONFIG.replace('"digits"', f'"{model}"').encode()}


def _record(version: int, artifacts: dict[str, str] | None = None) -> VersionRecord:
    return VersionRecord(
        model="digits",
        version=version,
        stage="candidate",
        model_family="mlp",
        snapshot_id="snap",
        git_commit="abc",
        job_id=f"job-{version}",
        hyperparameters={},
        metrics={"test_combined": 0.9},
        artifacts=artifacts or {},
    )


class RecordingFs:
    """The real s3fs file system, with the order of its writes noted (the manifest must come last)."""

    def __init__(self, fs: Any) -> None:
        self._fs = fs
        self.writes: list[str] = []

    def put_file(self, local: str, remote: str) -> None:
        self.writes.append(remote)
        self._fs.put_file(local, remote)

    def pipe_file(self, remote: str, data: bytes) -> None:
        self.writes.append(remote)
        self._fs.pipe_file(remote, data)


def test_register_publishes_files_then_manifest_and_announces_the_remote(aws_env: S3Server, tmp_path: Path) -> None:
    url = f"s3://{aws_env.bucket()}/models"
    repo = tmp_path / "models"
    expected = _local_version(repo, 1)
    int8 = _local_version(repo, 1, "digits_int8")  # the exporter's sibling folder, named by its artifact
    _local_version(repo, 1, "digits_other")  # another model's folder: not this version's
    artifacts = {"onnx": str(repo / "digits/1/model.onnx"), "onnx_int8": str(repo / "digits_int8/1/model.onnx")}
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(db_url, [MIGRATIONS])
    events: list = []
    publisher = remote_publisher(url, repo)
    assert isinstance(publisher, RemotePublisher)
    recording = RecordingFs(publisher.fs)
    publisher.fs = recording  # type: ignore[assignment]
    registry = Registry(Database(db_url), repository_uri=repo.as_uri(), publish=events.append, remote=publisher)

    registry.register(_record(1, artifacts))

    assert recording.writes[-1].endswith(f"/digits/1/{MANIFEST}")
    own = [w.split("/digits/1/", 1)[1] for w in recording.writes[:-1] if "/digits/1/" in w]
    assert sorted(own) == sorted(expected)
    assert recording.writes.index(f"{publisher.root}/digits_int8/1/{MANIFEST}") < recording.writes.index(
        f"{publisher.root}/digits/1/model.onnx"
    )
    fs = s3_filesystem(aws_env.settings())
    bucket_root = url.removeprefix("s3://")
    manifest = json.loads(fs.cat_file(f"{bucket_root}/digits/1/{MANIFEST}"))
    listed = {f["path"]: (f["size"], f["sha256"]) for f in manifest["files"]}
    assert listed == {rel: (len(data), hashlib.sha256(data).hexdigest()) for rel, data in expected.items()}
    assert remote_versions(fs, bucket_root) == {"digits": [1], "digits_int8": [1]}
    assert fs.cat_file(f"{bucket_root}/digits_int8/1/model.onnx") == int8["model.onnx"]
    assert events[-1].repository_uri == url and events[-1].version == "1"

    # What a model server pulls is byte for byte what the trainer wrote.
    cache = tmp_path / "cache"
    pulled = fetch_version(fs, bucket_root, "digits", 1, cache / "digits")
    assert (pulled / "model.onnx").read_bytes() == expected["model.onnx"]
    assert (cache / "digits" / "config.pbtxt").read_text() == CONFIG


def test_a_version_that_cannot_be_published_is_not_registered(aws_env: S3Server, tmp_path: Path) -> None:
    url = f"s3://{aws_env.bucket()}/models"
    repo = tmp_path / "models"
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(db_url, [MIGRATIONS])
    events: list = []
    registry = Registry(
        Database(db_url), repository_uri=repo.as_uri(), publish=events.append, remote=remote_publisher(url, repo)
    )
    with pytest.raises(FileNotFoundError, match="no version folder"):
        registry.register(_record(7))  # its folder was never written
    assert registry.list("digits") == [] and events == []


def test_bad_keys_stop_the_trainer_naming_the_setting(aws_env: S3Server, tmp_path: Path) -> None:
    url = f"s3://{aws_env.bucket()}/models"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_SECRET_ACCESS_KEY", "a-wrong-secret")
        with pytest.raises(ConfigError) as err:
            remote_publisher(url, tmp_path)
    message = str(err.value)
    assert "FLYWHEEL_TRAINER_REMOTE_MODEL_REPOSITORY" in message and url in message
    assert aws_env.endpoint in message and aws_env.access_key in message and "a-wrong-secret" not in message
    assert remote_publisher("", tmp_path) is None
