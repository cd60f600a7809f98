"""A model repository in an object store (`s3://bucket/prefix`): versions published whole, checked when pulled.

    <remote>/<model>/<version>/<file>…          the version folder's files, and the model's config.pbtxt
    <remote>/<model>/<version>/MANIFEST.json    written last: size and sha256 of every file above

An object store has no rename, so a reader cannot tell a half-uploaded version from a whole one by its
files. The manifest is that signal: a version without one is not there yet, and a version whose files do
not match their manifest (a partial overwrite, bit rot, a hand edit) is refused, never served.
The trainer publishes (`publish_version`); the model server pulls (`fetch_version`) into its local
Triton-layout folder. Names are checked before they become paths; sizes and counts are bounded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
CONFIG = "config.pbtxt"
FORMAT = 1
MAX_FILES = 256
MAX_FILE_BYTES = 8 * 1024**3
MAX_MANIFEST_BYTES = 1024 * 1024
_CHUNK = 4 * 1024 * 1024
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
FILE_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}){0,7}$")


class VersionRefused(Exception):
    """A remote version that must not be served: its files do not match its manifest, or the manifest is bad."""


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str


def is_version(name: str) -> bool:
    return name.isdigit() and not name.startswith("0") and len(name) <= 18


def check_model_name(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise ValueError(f"model name {name!r}: expected letters, digits, '_', '.', '-' (at most 128)")
    return name


def _sha256_file(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def publish_version(local_repository: Path, model: str, version: int, fs: AbstractFileSystem, root: str) -> str:
    """Upload `<local_repository>/<model>/<version>/` and the model's config.pbtxt, then the manifest.

    Returns the manifest's path. Re-publishing the same version uploads it again (the manifest last), so
    a publish interrupted half-way is completed by the next attempt."""
    check_model_name(model)
    source = local_repository / model / str(version)
    if not source.is_dir():
        raise FileNotFoundError(f"no version folder {source} to publish")
    files: dict[str, Path] = {}
    for p in sorted(source.rglob("*")):
        rel = p.relative_to(source).as_posix()
        if p.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            files[rel] = p
    config = local_repository / model / CONFIG
    if config.is_file() and CONFIG not in files:
        files[CONFIG] = config
    if not files or len(files) > MAX_FILES:
        raise ValueError(f"{source}: {len(files)} files to publish (1 to {MAX_FILES})")
    prefix = f"{root.rstrip('/')}/{model}/{version}"
    entries = []
    for rel, path in files.items():
        if not FILE_PATH.match(rel):
            raise ValueError(f"{path}: file name {rel!r} cannot be published (letters, digits, '_', '.', '-')")
        size, digest = _sha256_file(path)
        if size > MAX_FILE_BYTES:
            raise ValueError(f"{path}: {size} bytes, over the {MAX_FILE_BYTES} a published file may have")
        fs.put_file(str(path), f"{prefix}/{rel}")
        entries.append({"path": rel, "size": size, "sha256": digest})
    manifest = {"format": FORMAT, "model": model, "version": version, "files": entries}
    # Last: a reader sees the version only once every file it lists is in place.
    fs.pipe_file(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=2, sort_keys=True).encode())
    log.info("model version published", extra={"model": model, "version": version, "files": len(entries)})
    return f"{prefix}/{MANIFEST}"


def remote_versions(fs: AbstractFileSystem, root: str) -> dict[str, list[int]]:
    """Published versions per model (those with a manifest), ascending; bad names are ignored."""
    found: dict[str, list[int]] = {}
    for path in fs.glob(f"{root.rstrip('/')}/*/*/{MANIFEST}"):
        model, version = path.rstrip("/").split("/")[-3:-1]
        if MODEL_NAME.match(model) and is_version(version):
            found.setdefault(model, []).append(int(version))
    return {m: sorted(v) for m, v in sorted(found.items())}


def read_manifest(fs: AbstractFileSystem, root: str, model: str, version: int) -> list[FileEntry]:
    path = f"{root.rstrip('/')}/{model}/{version}/{MANIFEST}"
    with fs.open(path, "rb") as fh:
        raw = fh.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise VersionRefused(f"{path}: manifest over {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = json.loads(raw)
        if doc["format"] != FORMAT or doc["model"] != model or int(doc["version"]) != version:
            raise ValueError(f"format/model/version {doc['format']!r}/{doc['model']!r}/{doc['version']!r}")
        entries = [FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in doc["files"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise VersionRefused(f"{path}: not a valid manifest: {exc}") from None
    if not entries or len(entries) > MAX_FILES:
        raise VersionRefused(f"{path}: {len(entries)} files listed (1 to {MAX_FILES})")
    for e in entries:
        if not FILE_PATH.match(e.path) or e.path == MANIFEST or not 0 <= e.size <= MAX_FILE_BYTES:
            raise VersionRefused(f"{path}: entry {e.path!r} ({e.size} bytes) is not allowed")
        if not re.fullmatch(r"[0-9a-f]{64}", e.sha256):
            raise VersionRefused(f"{path}: entry {e.path!r} has no sha256")
    return entries


def fetch_version(fs: AbstractFileSystem, root: str, model: str, version: int, model_dir: Path) -> Path:
    """Download a published version into `<model_dir>/<version>` (atomically: staged, checked, renamed).

    Raises VersionRefused, naming the file, when a file's size or sha256 differs from the manifest; nothing
    is left in `model_dir` then. The version's config.pbtxt also becomes the model's."""
    check_model_name(model)
    entries = read_manifest(fs, root, model, version)
    model_dir.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".pull-{version}-"))
    try:
        for e in entries:
            remote = f"{root.rstrip('/')}/{model}/{version}/{e.path}"
            dest = staged / e.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            digest, size = hashlib.sha256(), 0
            with fs.open(remote, "rb") as src, open(dest, "wb") as out:
                while chunk := src.read(_CHUNK):
                    size += len(chunk)
                    if size > e.size:
                        break
                    digest.update(chunk)
                    out.write(chunk)
            if size != e.size or digest.hexdigest() != e.sha256:
                got = f"{size} bytes" if size != e.size else f"sha256 {digest.hexdigest()}"
                raise VersionRefused(
                    f"{model} v{version}: {e.path} does not match its manifest "
                    f"({got}, expected {e.size} bytes with sha256 {e.sha256})"
                )
        target = model_dir / str(version)
        if target.exists():
            shutil.rmtree(target)
        if (staged / CONFIG).is_file():
            # The model's config first: the version folder appears last, and with the config it was trained for.
            tmp = model_dir / f".{CONFIG}.{version}"
            shutil.copyfile(staged / CONFIG, tmp)
            os.replace(tmp, model_dir / CONFIG)
        os.rename(staged, target)
        return target
    finally:
        shutil.rmtree(staged, ignore_errors=True)


class RemotePublisher:
    """Publishes versions of a local repository to `url` (an `s3://bucket/prefix`), checked at start-up."""

    def __init__(self, url: str, local_repository: Path, settings: object | None = None) -> None:
        from services.storage.s3 import S3Settings, open_bucket

        self.url = url.rstrip("/")
        self.local_repository = local_repository
        # Raises S3Unavailable (URL, endpoint, key id): a trainer that could not publish must not start.
        self.fs, self.root = open_bucket(self.url, settings if isinstance(settings, S3Settings) else None)

    def publish(self, model: str, version: int) -> str:
        return publish_version(self.local_repository, model, version, self.fs, self.root)

    def folders_of(self, model: str, version: int, artifacts: dict[str, str]) -> list[str]:
        """The model folders a registered version wrote (its int8 and TorchScript siblings, named by
        their artifact paths under the local repository), the model's own last."""
        base = self.local_repository.resolve()
        siblings = set()
        for path in artifacts.values():
            try:
                parts = Path(path).resolve().relative_to(base).parts
            except ValueError:  # not under this repository (an external original, say)
                continue
            if len(parts) >= 3 and parts[1] == str(version) and parts[0] != model and MODEL_NAME.match(parts[0]):
                siblings.add(parts[0])
        return [*sorted(siblings), model]
