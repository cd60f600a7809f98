"""Fetch the data Label Studio tasks only reference, later, bounded and retried; dead-letter what fails.

Label Studio sends a webhook inside the annotation request with a one-second timeout and never
retries (LABEL-STUDIO-FACTS.md), so the webhook route only parses and *persists* a label whose
input is a reference (`FetchQueue.enqueue`, one SQL row) and answers. `FetchWorker` then reads the
data and submits the label through the normal pipeline:

* `/data/upload/…` and `/data/local-files/?d=…` from the Label Studio server, authorised with its
  legacy API token (`Authorization: Token …`) or its JWT flow (a refresh token exchanged at
  `/api/token/refresh/` for a five-minute access token, renewed when it expires or is refused);
* `s3://` and `gs://` through fsspec (credentials from the usual environment);
* `http(s)://` only from the hosts in the allow-list (and the Label Studio server itself); each
  redirect is checked the same way, and a credential never follows a redirect to another host;
* `data:` URIs inline.

Every fetch is bounded: bytes (declared and streamed), time (per request and in all), redirects.
Transient failures (timeouts, connection errors, 429, 5xx) are retried with exponential back-off;
a permanent one (404, 401, a host not allowed, too large, not an image) or the last attempt sends
the label to `flywheel.deadletter` with the reason, then marks it dead: never lost.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import fsspec
import httpx
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from services.events import EventProducer, new_meta
from services.events.codec import deterministic_id
from services.events.producer import ProduceFailed
from services.events.topics import DEADLETTER
from services.fetching import BoundedHttp, FetchFailed, FetchLimits
from services.genproto.flywheel.v1 import events_pb2 as ev
from services.ingest.errors import InvalidInput, Unavailable
from services.ingest.label_studio import Pending
from services.ingest.labels import LabelInput
from services.ingest.metrics import FETCHES
from services.ingest.pipeline import IngestPipeline
from services.ingest.tables import fetches
from services.storage import Database

log = logging.getLogger(__name__)

PENDING, DONE, DEAD, SUPERSEDED = "pending", "done", "dead", "superseded"
JWT_REFRESH_S = 240.0  # Label Studio's access tokens live five minutes: renew a minute early


class LabelStudioAuth:
    """The Authorization header for the Label Studio server: a legacy token, or a JWT access token."""

    def __init__(self, base_url: str, client: httpx.Client, token: str = "", refresh_token: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client
        self._token = token
        self._refresh = refresh_token
        self._access = ""
        self._access_until = 0.0
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self._token or self._refresh)

    def header(self, renew: bool = False) -> dict[str, str]:
        if self._token:
            return {"Authorization": f"Token {self._token}"}
        if not self._refresh:
            return {}
        with self._lock:
            if renew or not self._access or time.monotonic() >= self._access_until:
                self._access = self._exchange()
                self._access_until = time.monotonic() + JWT_REFRESH_S
            return {"Authorization": f"Bearer {self._access}"}

    def _exchange(self) -> str:
        try:
            r = self._client.post(f"{self.base_url}/api/token/refresh/", json={"refresh": self._refresh})
        except httpx.HTTPError as exc:
            raise FetchFailed(f"Label Studio token refresh failed: {type(exc).__name__}", permanent=False) from None
        if r.status_code in (401, 403):
            raise FetchFailed(
                "Label Studio refused the refresh token (FLYWHEEL_INGEST_LABEL_STUDIO_REFRESH_TOKEN)", True
            )
        if r.status_code != 200:
            raise FetchFailed(f"Label Studio token refresh answered {r.status_code}", permanent=r.status_code < 500)
        try:
            return str(r.json()["access"])
        except (ValueError, KeyError, TypeError):
            raise FetchFailed("Label Studio's token refresh answer has no access token", permanent=True) from None


class Fetcher:
    def __init__(
        self,
        limits: FetchLimits,
        label_studio_url: str = "",
        token: str = "",
        refresh_token: str = "",
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        self.limits = limits
        self._http = BoundedHttp(limits, allowed_hosts, "FLYWHEEL_INGEST_FETCH_ALLOWED_HOSTS")
        self._ls = urlsplit(label_studio_url.rstrip("/")) if label_studio_url else None
        self.auth = LabelStudioAuth(label_studio_url, self._http.client, token, refresh_token)

    def close(self) -> None:
        self._http.close()

    def fetch(self, uri: str) -> bytes:
        """The referenced bytes, or FetchFailed saying why (and whether trying again may help)."""
        if uri.startswith("data:"):
            return self._data_uri(uri)
        if uri.startswith("/data/"):
            if self._ls is None:
                raise FetchFailed(f"{uri[:80]} is a Label Studio file: set FLYWHEEL_INGEST_LABEL_STUDIO_URL", True)
            uri = f"{self._ls.scheme}://{self._ls.netloc}{uri}"
        scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
        if scheme in ("s3", "gs"):
            return self._object(uri, scheme)
        if scheme in ("http", "https"):
            return self._http.get(uri, self._label_studio_headers, lambda: self.auth.header(renew=True))
        raise FetchFailed(f"{uri[:80]!r}: only /data/…, s3://, gs://, http(s):// and data: are fetched", True)

    def _label_studio_headers(self, url: httpx.URL) -> dict[str, str] | None:
        """Label Studio's own URLs carry its credential; any other host gets none (and must be allowed)."""
        if self._ls is None or url.scheme != self._ls.scheme or url.netloc.decode() != self._ls.netloc:
            return None
        return self.auth.header()

    def _data_uri(self, uri: str) -> bytes:
        header, _, encoded = uri.partition(",")
        if not header.endswith(";base64"):
            raise FetchFailed("data: URI must be base64-encoded", True)
        if len(encoded) > self.limits.max_bytes * 4 // 3 + 4:
            raise FetchFailed(f"data: URI is over the limit of {self.limits.max_bytes} bytes", True)
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise FetchFailed("data: URI is not valid base64", True) from None

    def _object(self, uri: str, scheme: str) -> bytes:
        try:
            fs, path = fsspec.core.url_to_fs(uri)
        except ImportError:
            package = {"s3": "s3fs", "gs": "gcsfs"}[scheme]
            raise FetchFailed(f"{scheme}:// needs the {package} package installed in ingest", True) from None
        try:
            size = fs.size(path)
            if size is not None and size > self.limits.max_bytes:
                raise FetchFailed(f"{uri[:80]} is {size} bytes; the limit is {self.limits.max_bytes}", True)
            with fs.open(path, "rb") as fh:
                data: bytes = fh.read(self.limits.max_bytes + 1)
        except FetchFailed:
            raise
        except (FileNotFoundError, PermissionError) as exc:
            raise FetchFailed(f"{uri[:80]}: {type(exc).__name__}", True) from None
        except OSError as exc:
            raise FetchFailed(f"{uri[:80]}: {type(exc).__name__}: {exc}", False) from None
        if len(data) > self.limits.max_bytes:
            raise FetchFailed(f"{uri[:80]} is over the limit of {self.limits.max_bytes} bytes", True)
        return data


# -- the queue ------------------------------------------------------------------------------------
def label_json(inp: LabelInput) -> str:
    doc = {k: v for k, v in asdict(inp).items() if k not in ("image", "features", "row", "text")}
    for key in ("created_at", "updated_at"):
        if isinstance(doc[key], datetime):
            doc[key] = doc[key].isoformat()
    return json.dumps(doc, sort_keys=True)


def label_from_json(text: str) -> LabelInput:
    doc: dict[str, Any] = json.loads(text)
    for key in ("created_at", "updated_at"):
        if doc.get(key):
            doc[key] = datetime.fromisoformat(doc[key])
    return LabelInput(**doc)


@dataclass(frozen=True)
class QueuedFetch:
    fetch_id: str
    record_key: str
    project: str
    uri: str
    label: str
    state: str
    attempts: int
    reason: str


class FetchQueue:
    def __init__(self, db: Database) -> None:
        self.db = db

    def enqueue(self, items: list[tuple[Pending, str]]) -> list[str]:
        """Persist (pending label, record key) pairs; a replayed webhook queues nothing twice."""
        now = int(time.time() * 1000)
        ids = []
        with self.db.session() as s:
            for pending, key in items:
                fid = deterministic_id("fetch", key, pending.input.identity, pending.uri)
                ids.append(fid)
                if s.execute(select(fetches.c.fetch_id).where(fetches.c.fetch_id == fid)).first() is not None:
                    continue
                s.execute(
                    insert(fetches).values(
                        fetch_id=fid,
                        record_key=key,
                        project=pending.input.project,
                        uri=pending.uri,
                        label=label_json(pending.input),
                        state=PENDING,
                        attempts=0,
                        next_ms=now,
                        reason="",
                        created_ms=now,
                        updated_ms=now,
                    )
                )
        return ids

    def supersede(self, record_keys: list[str]) -> int:
        """Drop pending fetches of labels a later delete removed (their data no longer matters)."""
        if not record_keys:
            return 0
        with self.db.session() as s:
            return s.execute(
                update(fetches)
                .where(fetches.c.record_key.in_(record_keys), fetches.c.state == PENDING)
                .values(state=SUPERSEDED, reason="the annotation was deleted", updated_ms=int(time.time() * 1000))
            ).rowcount

    def due(self, limit: int) -> list[QueuedFetch]:
        with self.db.session() as s:
            rows = s.execute(
                select(fetches)
                .where(fetches.c.state == PENDING, fetches.c.next_ms <= int(time.time() * 1000))
                .order_by(fetches.c.created_ms)
                .limit(limit)
            ).all()
        return [_queued(r) for r in rows]

    def listing(self, state: str = "", limit: int = 100) -> list[QueuedFetch]:
        q = select(fetches).order_by(fetches.c.created_ms).limit(limit)
        if state:
            q = q.where(fetches.c.state == state)
        with self.db.session() as s:
            return [_queued(r) for r in s.execute(q).all()]

    def set(self, fetch_id: str, **values: Any) -> None:
        with self.db.session() as s:
            s.execute(
                update(fetches)
                .where(fetches.c.fetch_id == fetch_id)
                .values(**values, updated_ms=int(time.time() * 1000))
            )


def _queued(row: Any) -> QueuedFetch:
    return QueuedFetch(
        row.fetch_id, row.record_key, row.project, row.uri, row.label, row.state, row.attempts, row.reason
    )


class FetchWorker:
    """Works the queue: fetch, submit, or retry later, or dead-letter; `run()` until stopped."""

    def __init__(
        self,
        queue: FetchQueue,
        fetcher: Fetcher,
        pipeline: IngestPipeline,
        producer: EventProducer,
        attempts: int = 5,
        backoff_s: float = 1.0,
        workers: int = 4,
        poll_s: float = 0.5,
    ) -> None:
        self.queue = queue
        self.fetcher = fetcher
        self.pipeline = pipeline
        self.producer = producer
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.poll_s = poll_s
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="fetch")
        self._workers = workers
        self.wake = threading.Event()

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                worked = self.work_once()
                if not worked:
                    self.wake.wait(self.poll_s)
                    self.wake.clear()
        finally:
            self._pool.shutdown(wait=True)
            self.fetcher.close()

    def work_once(self) -> int:
        due = self.queue.due(self._workers * 4)
        list(self._pool.map(self._one, due))
        return len(due)

    def _one(self, item: QueuedFetch) -> None:
        label = label_from_json(item.label)
        try:
            data = self.fetcher.fetch(item.uri)
        except FetchFailed as exc:
            FETCHES.labels("failed" if exc.permanent else "retried").inc()
            attempts = item.attempts + 1
            if exc.permanent or attempts >= self.attempts:
                tries = "" if exc.permanent else f" (after {attempts} attempts)"
                self._dead(item, f"fetching {item.uri[:200]}: {exc.reason}{tries}")
            else:
                wait_ms = int(self.backoff_s * 1000 * 2 ** (attempts - 1))
                self.queue.set(
                    item.fetch_id, attempts=attempts, next_ms=int(time.time() * 1000) + wait_ms, reason=exc.reason
                )
            return
        kind = self.pipeline.catalog.get(item.project).spec.kind if item.project in self.pipeline.catalog else ""
        if kind == "text":
            try:
                filled = replace(label, text=data.decode("utf-8"))
            except UnicodeDecodeError:
                self._dead(item, f"{item.uri[:200]} is not UTF-8 text")
                return
        else:
            filled = replace(label, image=data)
        try:
            self.pipeline.submit([filled], skip_unknown_deletes=True)
        except InvalidInput as exc:
            self._dead(item, f"the data at {item.uri[:200]} was refused: {exc}")
            return
        except Unavailable as exc:
            # Our own outage (database, broker): try again later, without counting it against the task.
            self.queue.set(item.fetch_id, next_ms=int(time.time() * 1000) + 1000, reason=str(exc))
            return
        FETCHES.labels("done").inc()
        self.queue.set(item.fetch_id, state=DONE, reason="")

    def _dead(self, item: QueuedFetch, reason: str) -> None:
        """Dead-letter first (acknowledged by the broker), then mark the row: a crash between re-sends, never loses."""
        letter = ev.DeadLetter(
            meta=new_meta("ingest", event_id=deterministic_id("fetch-dead", item.fetch_id)),
            original_topic="",
            value=item.label.encode(),
            reason=reason,
            consumer_group="ingest-fetcher",
            headers={"source": "label-studio", "project": item.project, "uri": item.uri[:1000]},
        )
        try:
            self.producer.send(DEADLETTER.name, letter, key=item.fetch_id.encode())
            self.producer.flush()
        except ProduceFailed as exc:
            log.warning("dead letter not sent; will retry", extra={"fetch_id": item.fetch_id, "error": str(exc)})
            self.queue.set(item.fetch_id, next_ms=int(time.time() * 1000) + 1000)
            return
        FETCHES.labels("dead").inc()
        log.info("fetch dead-lettered", extra={"fetch_id": item.fetch_id, "project": item.project, "reason": reason})
        self.queue.set(item.fetch_id, state=DEAD, reason=reason)


def enqueue_or_fail(queue: FetchQueue, items: list[tuple[Pending, str]]) -> list[str]:
    try:
        return queue.enqueue(items)
    except IntegrityError as exc:  # two webhooks raced on the same fetch: the other one queued it
        log.info("fetch already queued", extra={"error": type(exc).__name__})
        return [deterministic_id("fetch", key, p.input.identity, p.uri) for p, key in items]
