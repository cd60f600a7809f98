"""The lake's file operations over fsspec: atomic writes (temporary name, then rename), listing.

On a local file system a write is fsynced before the rename and the folder after it, so a
file that has its final name is whole and durable. On `s3://` a write is one PUT (visible whole or
not at all), and the bucket is checked, or created, when the store is made (services/storage/s3.py).
"""

from __future__ import annotations

import os
import posixpath
import uuid

import fsspec

from services.storage import s3

TMP_PREFIX = ".tmp-"


class LakeStore:
    def __init__(self, root_url: str) -> None:
        self.url = root_url.rstrip("/")
        self.s3 = s3.is_s3(self.url)
        self.fs, root = s3.open_bucket(self.url) if self.s3 else fsspec.core.url_to_fs(self.url)
        self.root = root.rstrip("/")
        self.local = "file" in _protocols(self.fs)
        if self.local:
            os.makedirs(self.root, exist_ok=True)

    def full(self, rel: str) -> str:
        return posixpath.join(self.root, rel)

    def url_of(self, rel: str) -> str:
        return f"file://{self.full(rel)}" if self.local else self.fs.unstrip_protocol(self.full(rel))

    def write_atomic(self, rel: str, data: bytes) -> None:
        final = self.full(rel)
        folder = posixpath.dirname(final)
        tmp = posixpath.join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(final)}")
        if self.local:
            os.makedirs(folder, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            return
        if self.s3:
            self.fs.pipe_file(final, data)
            return
        self.fs.makedirs(folder, exist_ok=True)
        with self.fs.open(tmp, "wb") as fh:
            fh.write(data)
        self.fs.mv(tmp, final)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open(self.full(rel), "rb") as fh:
            return fh.read()

    def exists(self, rel: str) -> bool:
        if self.s3 and not rel:  # an S3 prefix exists only once it holds an object: ask the bucket
            return s3.bucket_reachable(self.fs, self.root)
        return bool(self.fs.exists(self.full(rel)))

    def glob(self, pattern: str) -> list[str]:
        """Relative paths matching a glob under the root, sorted; temporary files excluded."""
        found = self.fs.glob(self.full(pattern))
        prefix = self.root + "/"
        rels = [p[len(prefix) :] if p.startswith(prefix) else p for p in found]
        return sorted(r for r in rels if not posixpath.basename(r).startswith(TMP_PREFIX))

    def remove(self, rel: str) -> None:
        try:
            self.fs.rm(self.full(rel))
        except FileNotFoundError:
            pass

    def remove_temporaries(self, pattern: str) -> int:
        stale = [p for p in self.fs.glob(self.full(pattern)) if posixpath.basename(p).startswith(TMP_PREFIX)]
        for p in stale:
            self.fs.rm(p, recursive=True)
        return len(stale)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)
