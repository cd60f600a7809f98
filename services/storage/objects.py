"""A content-addressed object store over fsspec (`file://` by default, `s3://` in production).

Objects are named by their sha256 (`<root>/sha256/ab/abcdef…`), so a write is idempotent and a
replay stores nothing twice.  Writes go to a temporary name first and are then moved into place.
"""

from __future__ import annotations

import hashlib
import uuid

import fsspec


class ObjectStore:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self._protocol = self.url.split("://", 1)[0] if "://" in self.url else "file"

    def _path(self, digest: str) -> str:
        return f"{self.root}/sha256/{digest[:2]}/{digest}"

    def uri_for(self, digest: str) -> str:
        return f"{self._protocol}://{self._path(digest)}"

    def put(self, data: bytes) -> tuple[str, str]:
        """Store bytes; returns (uri, sha256). Idempotent."""
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if not self.fs.exists(path):
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            with self.fs.open(tmp, "wb") as fh:
                fh.write(data)
            self.fs.mv(tmp, path)
        return self.uri_for(digest), digest

    def get(self, uri_or_digest: str) -> bytes:
        digest = uri_or_digest.rsplit("/", 1)[-1]
        with self.fs.open(self._path(digest), "rb") as fh:
            data: bytes = fh.read()
        return data

    def exists(self, digest: str) -> bool:
        return bool(self.fs.exists(self._path(digest)))

    def ping(self) -> tuple[bool, str]:
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            return True, "ok"
        except OSError as exc:
            return False, f"object store unusable: {exc}"
