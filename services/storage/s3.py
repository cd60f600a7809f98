"""`s3://` for the object store, the lake and the model repository: one S3 client setup, checked at start-up.

Settings come from the standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL,
AWS_REGION), so the same environment drives Flywheel, the AWS CLI and any other S3 client. The secret is a
`SecretStr`: it never appears in a repr, a log line or an error message. `open_bucket` checks the bucket
before a service starts (creating it when missing): refused keys or an unreachable endpoint stop start-up
with a message naming the URL, the endpoint and the key id, instead of failing on the first write.
"""

from __future__ import annotations

import fsspec
from fsspec import AbstractFileSystem
from fsspec.asyn import sync
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.config import ConfigError

SCHEME = "s3://"


class S3Unavailable(ConfigError):
    """The bucket cannot be used with these settings (bad keys, no endpoint, no permission).

    A ConfigError: raised where a service makes its stores, it stops start-up with this message alone."""


class S3Settings(BaseSettings):
    """The standard AWS environment variables; a field may also be passed by its name."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    access_key_id: str = Field("", validation_alias=AliasChoices("access_key_id", "AWS_ACCESS_KEY_ID"))
    secret_access_key: SecretStr = Field(
        SecretStr(""), validation_alias=AliasChoices("secret_access_key", "AWS_SECRET_ACCESS_KEY")
    )
    endpoint_url: str = Field(
        "",
        validation_alias=AliasChoices("endpoint_url", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        description="S3-compatible endpoint (MinIO, Versity, Ceph…); empty: AWS itself",
    )
    region: str = Field("us-east-1", validation_alias=AliasChoices("region", "AWS_REGION", "AWS_DEFAULT_REGION"))
    connect_timeout_s: float = Field(
        5.0, gt=0, le=120, validation_alias=AliasChoices("connect_timeout_s", "FLYWHEEL_S3_CONNECT_TIMEOUT_S")
    )
    read_timeout_s: float = Field(
        60.0, gt=0, le=3600, validation_alias=AliasChoices("read_timeout_s", "FLYWHEEL_S3_READ_TIMEOUT_S")
    )

    def describe(self) -> str:
        """Where and as whom, for error messages: never the secret."""
        endpoint = self.endpoint_url or "the AWS default endpoint"
        return f"endpoint {endpoint}, access key id {self.access_key_id or '(none: the default credential chain)'}"


def is_s3(url: str) -> bool:
    return url.startswith(SCHEME)


def s3_filesystem(settings: S3Settings | None = None) -> AbstractFileSystem:
    """An s3fs file system for these settings (the environment's when None)."""
    import s3fs

    settings = settings or S3Settings()
    secret = settings.secret_access_key.get_secret_value()
    return s3fs.S3FileSystem(
        key=settings.access_key_id or None,
        secret=secret or None,
        endpoint_url=settings.endpoint_url or None,
        client_kwargs={"region_name": settings.region},
        config_kwargs={
            "connect_timeout": settings.connect_timeout_s,
            "read_timeout": settings.read_timeout_s,
            "retries": {"max_attempts": 3, "mode": "standard"},
        },
        # Other processes write the same bucket: a cached listing would hide their new objects.
        use_listings_cache=False,
        skip_instance_cache=True,
    )


def url_to_fs(url: str, settings: S3Settings | None = None) -> tuple[AbstractFileSystem, str]:
    """fsspec's url_to_fs, with `s3://` configured from S3Settings (and checked by `open_bucket`)."""
    if not is_s3(url):
        fs, root = fsspec.core.url_to_fs(url)
        return fs, root
    return s3_filesystem(settings), url[len(SCHEME) :].rstrip("/")


def open_bucket(url: str, settings: S3Settings | None = None) -> tuple[AbstractFileSystem, str]:
    """A file system and root for an `s3://bucket/prefix` URL whose bucket exists (created when missing).

    Raises S3Unavailable, naming the URL, the endpoint and the key id, when the bucket cannot be used."""
    settings = settings or S3Settings()
    fs, root = url_to_fs(url, settings)
    bucket = root.split("/", 1)[0]
    if not bucket:
        raise S3Unavailable(f"{url}: no bucket named (expected s3://bucket/prefix)")
    try:
        try:
            sync(fs.loop, fs._call_s3, "head_bucket", Bucket=bucket)
        except FileNotFoundError:
            sync(fs.loop, fs._call_s3, "create_bucket", Bucket=bucket)
    except S3Unavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure here means the same thing to the operator
        raise S3Unavailable(f"cannot use {url} ({settings.describe()}): {_reason(exc)}") from None
    return fs, root


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, PermissionError) or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
        return f"access refused: wrong keys, or no permission on the bucket ({text})"
    if "Could not connect" in text or isinstance(exc, ConnectionError):
        return f"the endpoint is unreachable ({text})"
    return f"{type(exc).__name__}: {text}"


def bucket_reachable(fs: AbstractFileSystem, root: str) -> bool:
    """Whether the bucket of `root` answers (a readiness check: an empty prefix still counts)."""
    try:
        sync(fs.loop, fs._call_s3, "head_bucket", Bucket=root.split("/", 1)[0])
    except Exception:  # noqa: BLE001 - any failure means not ready; the caller names the URL
        return False
    return True
