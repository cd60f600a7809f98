"""The object store on `s3://` against a real S3-compatible server (Versity S3 Gateway, tests/support/s3.py):
objects stored and read back, the bucket created when missing, and bad keys or a dead endpoint refused at
start-up with a message naming the URL, the endpoint and the key id, never the secret."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from services.storage.objects import ObjectStore
from services.storage.s3 import S3Settings, S3Unavailable, open_bucket, s3_filesystem
from tests.support.s3 import S3Server, dead_endpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def aws_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


def test_objects_are_stored_listed_and_read_back_in_a_bucket_the_store_creates(aws_env: S3Server) -> None:
    bucket = aws_env.bucket()
    admin = s3_filesystem(aws_env.settings())
    assert bucket not in [b.rstrip("/") for b in admin.ls("", refresh=True)]

    store = ObjectStore(f"s3://{bucket}/objects")
    assert bucket in [b.rstrip("/") for b in admin.ls("", refresh=True)]
    assert store.ping() == (True, "ok")
    blobs = [b"first object", b"second object" * 1000, b""]
    stored = store.put_many(blobs)
    assert store.put(blobs[0]) == stored[0]  # idempotent: same name, nothing stored twice

    for (uri, digest), data in zip(stored, blobs, strict=True):
        assert digest == hashlib.sha256(data).hexdigest()
        assert uri == f"s3://{bucket}/objects/sha256/{digest[:2]}/{digest}"
        assert store.exists(digest)
        assert store.get(uri) == data
        assert store.get(digest) == data
    listed = sorted(p.rsplit("/", 1)[-1] for p in admin.find(f"{bucket}/objects"))
    assert listed == sorted(d for _, d in stored)  # one object each, no temporary names left
    assert not store.exists(hashlib.sha256(b"never stored").hexdigest())
    with pytest.raises(FileNotFoundError):
        store.get(hashlib.sha256(b"never stored").hexdigest())


def test_a_second_store_in_another_process_reads_what_the_first_wrote(aws_env: S3Server) -> None:
    url = f"s3://{aws_env.bucket()}/objects"
    uri, _ = ObjectStore(url).put(b"shared between processes")
    read = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; from services.storage.objects import ObjectStore; "
            f"sys.stdout.buffer.write(ObjectStore({url!r}).get({uri!r}))",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert read.stdout == b"shared between processes"


def test_refused_keys_stop_start_up_naming_url_endpoint_and_key_id(aws_env: S3Server) -> None:
    url = f"s3://{aws_env.bucket()}/objects"
    wrong = S3Settings(
        access_key_id=aws_env.access_key, secret_access_key="not-the-secret-x", endpoint_url=aws_env.endpoint
    )
    with pytest.raises(S3Unavailable) as err:
        open_bucket(url, wrong)
    message = str(err.value)
    assert url in message and aws_env.endpoint in message and aws_env.access_key in message, message
    assert "refused" in message, message
    assert "not-the-secret-x" not in message and aws_env.secret_key not in message

    unknown = S3Settings(access_key_id="AKUNKNOWN", secret_access_key="whatever", endpoint_url=aws_env.endpoint)
    with pytest.raises(S3Unavailable, match="AKUNKNOWN"):
        open_bucket(url, unknown)


def test_an_unreachable_endpoint_stops_start_up_with_a_clear_message(aws_env: S3Server) -> None:
    endpoint = dead_endpoint()
    settings = aws_env.settings(endpoint_url=endpoint, connect_timeout_s="1")
    with pytest.raises(S3Unavailable) as err:
        open_bucket("s3://somewhere/objects", settings)
    message = str(err.value)
    assert "s3://somewhere/objects" in message and endpoint in message and aws_env.access_key in message
    assert "unreachable" in message, message


def test_a_process_making_a_store_with_bad_keys_exits_with_the_message(aws_env: S3Server, tmp_path: Path) -> None:
    """A service process (the object store's first user) does not start on refused keys."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        **aws_env.env(AWS_SECRET_ACCESS_KEY="wrong-secret-value"),
    }
    url = f"s3://{aws_env.bucket()}/objects"
    code = f"from services.storage.objects import ObjectStore; ObjectStore({url!r})"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert url in proc.stderr and aws_env.access_key in proc.stderr and "refused" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr  # the message alone, as for any invalid configuration
    assert "wrong-secret-value" not in proc.stderr


def test_the_secret_is_never_in_a_repr() -> None:
    settings = S3Settings(access_key_id="AKID", secret_access_key="sup3r-s3cret", endpoint_url="http://x:1")
    assert "sup3r-s3cret" not in repr(settings) and "sup3r-s3cret" not in str(settings)
    assert "sup3r-s3cret" not in settings.describe() and "AKID" in settings.describe()
    assert settings.secret_access_key.get_secret_value() == "sup3r-s3cret"


def test_settings_come_from_the_standard_aws_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    s = S3Settings()
    assert (s.access_key_id, s.endpoint_url, s.region) == ("AKENV", "http://127.0.0.1:9", "eu-west-3")
    assert s.secret_access_key.get_secret_value() == "env-secret"
