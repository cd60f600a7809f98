"""A remote model repository (`s3://…`): checked versions pulled into the local folder, then hot-swapped.

The model server still serves from its local Triton-layout folder (repository.py), which becomes a
cache: every `poll_s` the remote's published versions (services/storage/model_store.py) that the
cache lacks are downloaded, checked against their manifest (size and sha256 of every file), renamed
into place, and the model is reloaded, which swaps in the new version per its version policy without
a restart (served.py). A version that fails its check is refused with a log line, never placed in the
cache, and tried again at the next poll, so a re-upload heals it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from services.modelserver.errors import ModelServerError
from services.modelserver.served import ServedModels
from services.storage import model_store
from services.storage.s3 import S3Settings, open_bucket

log = logging.getLogger(__name__)


class RemoteRepository:
    """Pulls published versions from `url` into `cache` (the model server's local repository folder)."""

    def __init__(self, url: str, cache: Path, latest: int = 3, settings: S3Settings | None = None) -> None:
        self.url = url.rstrip("/")
        self.cache = cache
        self.latest = latest
        # Raises S3Unavailable (URL, endpoint, key id) now: bad keys stop start-up, not the first poll.
        self.fs, self.root = open_bucket(self.url, settings)
        self._lock = threading.Lock()  # one pull at a time: two would stage the same version twice

    def pull(self) -> dict[str, list[int]]:
        """Download the newest `latest` published versions of each model that the cache lacks; returns
        the new versions per model."""
        with self._lock:
            return self._pull()

    def _pull(self) -> dict[str, list[int]]:
        new: dict[str, list[int]] = {}
        for model, versions in model_store.remote_versions(self.fs, self.root).items():
            for version in versions[-self.latest :]:
                if (self.cache / model / str(version)).is_dir():
                    continue
                try:
                    model_store.fetch_version(self.fs, self.root, model, version, self.cache / model)
                except model_store.VersionRefused as exc:
                    log.error(
                        "model version refused: it does not match its manifest; retried at the next poll",
                        extra={"model": model, "version": version, "repository": self.url, "error": str(exc)},
                    )
                    continue
                except Exception as exc:  # noqa: BLE001 - the store hiccuped: the next poll tries again
                    log.warning(
                        "model version not pulled", extra={"model": model, "version": version, "error": repr(exc)}
                    )
                    continue
                new.setdefault(model, []).append(version)
                log.info("model version pulled", extra={"model": model, "version": version, "repository": self.url})
        return new


async def apply(remote: RemoteRepository, models: ServedModels) -> dict[str, list[int]]:
    """One poll: pull, then reload each model that gained a version (the hot swap)."""
    try:
        new = await asyncio.to_thread(remote.pull)
    except Exception as exc:  # noqa: BLE001 - an outage of the store must not end the polling
        log.warning("remote model repository not reachable", extra={"repository": remote.url, "error": repr(exc)})
        return {}
    for model in new:
        try:
            await models.load(model)
        except ModelServerError as exc:
            log.error("pulled model version failed to load", extra={"model": model, "error": exc.message})
    return new


async def follow(remote: RemoteRepository, models: ServedModels, poll_s: float, stop: threading.Event) -> None:
    """Poll every `poll_s` seconds until `stop` is set."""
    while not stop.is_set():
        await asyncio.to_thread(stop.wait, poll_s)
        if not stop.is_set():
            await apply(remote, models)
