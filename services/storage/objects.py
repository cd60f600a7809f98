"""A content-addressed object store over fsspec (`file://` by default, `s3://` in production).

On `s3://` the bucket is checked (created when missing) when the store is made, so bad keys or an
unreachable endpoint stop start-up (services/storage/s3.py), and an object is one PUT: S3 makes a
PUT visible whole or not at all, so there is no temporary name to rename.

Objects are named by their sha256 (`<root>/sha256/ab/abcdef…`), so a write is idempotent and a
replay stores nothing twice.  Writes go to a temporary name first and are then moved into place.

On the local file system a write is durable when `put`/`put_many` returns: the temporary files'
bytes are flushed to disk before they are renamed into place (so a final name never shows a
partial object, even after a power loss), and the renames are flushed before returning (so a
database row committed afterwards never points at a name the disk forgot).  `put_many` does
that for a whole batch with two file-system flushes (Linux `syncfs`) instead of an fsync per
file and per directory; elsewhere it falls back to fsyncing each file and directory.  Batches
are stored one at a time per store.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import sys
import threading
import uuid
from collections.abc import Sequence

import fsspec
from fsspec.implementations.local import LocalFileSystem

from services.storage import s3


def _load_syncfs():  # type: ignore[no-untyped-def]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return fn


_SYNCFS = _load_syncfs()


class ObjectStore:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._s3 = s3.is_s3(self.url)
        self.fs, self.root = s3.open_bucket(self.url) if self._s3 else fsspec.core.url_to_fs(self.url)
        self._protocol = self.url.split("://", 1)[0] if "://" in self.url else "file"
        self._local = isinstance(self.fs, LocalFileSystem)
        self._dirs: set[str] = set()  # fan-out directories known to exist (and to be durable)
        # One batch at a time: its existence checks see only flushed objects, and a flush never
        # runs beside another batch's file creation (which made each flush cost far more CPU).
        self._put_lock = threading.Lock()
        # Renames whose flush has not succeeded yet; True at start, in case a crashed process
        # left some that the kernel still holds (so the first batch flushes even if it wrote nothing).
        self._unflushed = True

    def _path(self, digest: str) -> str:
        return f"{self.root}/sha256/{digest[:2]}/{digest}"

    def uri_for(self, digest: str) -> str:
        return f"{self._protocol}://{self._path(digest)}"

    def put(self, data: bytes) -> tuple[str, str]:
        """Store bytes; returns (uri, sha256). Idempotent."""
        return self.put_many([data])[0]

    def put_many(self, blobs: Sequence[bytes]) -> list[tuple[str, str]]:
        """Store each blob (durably, on a local file system); returns (uri, sha256) per blob. Idempotent."""
        digests = [hashlib.sha256(b).hexdigest() for b in blobs]
        if self._local:
            self._put_local(dict(zip(digests, blobs, strict=True)))
        else:
            for digest, data in dict(zip(digests, blobs, strict=True)).items():
                self._put_fsspec(digest, data)
        return [(self.uri_for(d), d) for d in digests]

    def _put_fsspec(self, digest: str, data: bytes) -> None:
        path = self._path(digest)
        if self.fs.exists(path):
            return
        if self._s3:
            self.fs.pipe_file(path, data)
            return
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with self.fs.open(tmp, "wb") as fh:
            fh.write(data)
        self.fs.mv(tmp, path)

    def _put_local(self, objects: dict[str, bytes]) -> None:
        with self._put_lock:
            new = {d: b for d, b in objects.items() if not os.path.exists(self._path(d))}
            if not new:
                if self._unflushed:  # an earlier flush failed: what we found may not be durable
                    self._flush([f"{self.root}/sha256"])
                    self._unflushed = False
                return
            new_dirs = self._make_dirs({self._path(d).rsplit("/", 1)[0] for d in new})
            staged: list[tuple[str, str]] = []
            try:
                for digest, data in new.items():
                    path = self._path(digest)
                    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    staged.append((tmp, path))
                    try:
                        view = memoryview(data)
                        while view:
                            view = view[os.write(fd, view) :]
                        if _SYNCFS is None:
                            os.fsync(fd)
                    finally:
                        os.close(fd)
                if _SYNCFS is not None:
                    self._syncfs_now()  # every temporary file's bytes on disk before any rename
                self._unflushed = True
                for tmp, path in staged:
                    os.replace(tmp, path)
                staged = []
            finally:
                for tmp, _ in staged:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
            # If this flush fails, the names are visible but maybe not durable: raising keeps the
            # caller from committing rows, and the next batch flushes before relying on them.
            self._flush([*{p.rsplit("/", 1)[0] for p in map(self._path, new)}, *new_dirs, f"{self.root}/sha256"])
            self._unflushed = False

    def _make_dirs(self, dirs: set[str]) -> list[str]:
        """Create missing fan-out directories; returns the parents whose entries must be flushed."""
        created: list[str] = []
        for d in dirs - self._dirs:
            if not os.path.isdir(d):
                os.makedirs(d, exist_ok=True)
                created.append(d.rsplit("/", 1)[0])
        self._dirs |= dirs
        return created

    def _flush(self, dirs: list[str]) -> None:
        """Make the renames (and created directories) durable: one syncfs, or an fsync per directory."""
        if _SYNCFS is not None:
            self._syncfs_now()
            return
        for d in dict.fromkeys(dirs or [self.root]):
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _syncfs_now(self) -> None:
        assert _SYNCFS is not None
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _SYNCFS(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs failed: {os.strerror(err)}")
        finally:
            os.close(fd)

    def get(self, uri_or_digest: str) -> bytes:
        digest = uri_or_digest.rsplit("/", 1)[-1]
        with self.fs.open(self._path(digest), "rb") as fh:
            data: bytes = fh.read()
        return data

    def exists(self, digest: str) -> bool:
        return bool(self.fs.exists(self._path(digest)))

    def ping(self) -> tuple[bool, str]:
        if self._s3:
            ok = s3.bucket_reachable(self.fs, self.root)
            return ok, "ok" if ok else f"object store unusable: the bucket of {self.url} does not answer"
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            return True, "ok"
        except OSError as exc:
            return False, f"object store unusable: {exc}"
