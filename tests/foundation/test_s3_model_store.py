"""The remote model repository's pull on a real S3 server (tests/support/s3.py), in process: which versions
are pulled, and that a manifest or file that does not check out leaves nothing in the cache.
(The model server serving and hot-swapping them: tests/modelserver/test_remote_repository.py, a process of
its own, since tritonclient cannot share one with the server's generated code.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.modelserver.remote import RemoteRepository
from services.storage.model_store import MANIFEST, VersionRefused, fetch_version, publish_version
from tests.support.s3 import S3Server


def _publish(fs, root: str, local: Path, version: int) -> None:  # type: ignore[no-untyped-def]
    folder = local / "m" / str(version)
    folder.mkdir(parents=True)
    (local / "m" / "config.pbtxt").write_text(f'name: "m"  # written with v{version}\n')
    (folder / "model.onnx").write_bytes(f"weights v{version}".encode())
    publish_version(local, "m", version, fs, root)


def test_only_the_newest_versions_are_pulled_and_the_config_follows_the_newest(
    s3_server: S3Server, tmp_path: Path
) -> None:
    remote = RemoteRepository(f"s3://{s3_server.bucket()}/repo", tmp_path / "cache", 2, s3_server.settings())
    for v in (1, 2, 3, 4):
        _publish(remote.fs, remote.root, tmp_path / "local", v)
    remote.fs.pipe_file(f"{remote.root}/m/5/model.onnx", b"uploading, no manifest yet")

    assert remote.pull() == {"m": [3, 4]}
    assert sorted(p.name for p in (tmp_path / "cache" / "m").iterdir()) == ["3", "4", "config.pbtxt"]
    assert (tmp_path / "cache" / "m" / "4" / "model.onnx").read_bytes() == b"weights v4"
    assert "v4" in (tmp_path / "cache" / "m" / "config.pbtxt").read_text()
    assert remote.pull() == {}  # nothing new: nothing downloaded again


@pytest.mark.parametrize(
    "damage",
    ["a byte changed", "file truncated", "file missing", "manifest names ../ path", "manifest not json"],
)
def test_a_version_that_does_not_check_out_leaves_nothing_in_the_cache(
    s3_server: S3Server, tmp_path: Path, damage: str
) -> None:
    remote = RemoteRepository(f"s3://{s3_server.bucket()}/repo", tmp_path / "cache", 3, s3_server.settings())
    _publish(remote.fs, remote.root, tmp_path / "local", 1)
    model_file, manifest = f"{remote.root}/m/1/model.onnx", f"{remote.root}/m/1/{MANIFEST}"
    if damage == "a byte changed":
        remote.fs.pipe_file(model_file, b"weights v9")
    elif damage == "file truncated":
        remote.fs.pipe_file(model_file, b"weights")
    elif damage == "file missing":
        remote.fs.rm(model_file)
    elif damage == "manifest names ../ path":
        doc = json.loads(remote.fs.cat_file(manifest))
        doc["files"][0]["path"] = "../../escape"
        remote.fs.pipe_file(manifest, json.dumps(doc).encode())
    else:
        remote.fs.pipe_file(manifest, b"{not json")

    assert remote.pull() == {}
    assert not (tmp_path / "cache" / "m" / "1").exists()
    assert list((tmp_path / "cache").rglob("*")) in ([], [tmp_path / "cache" / "m"])  # no staged leftovers
    if damage != "file missing":
        with pytest.raises(VersionRefused):
            fetch_version(remote.fs, remote.root, "m", 1, tmp_path / "cache" / "m")
