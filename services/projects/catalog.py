"""The projects a service knows: every version of every spec, learnt from `flywheel.projects`.

The trainer owns the project registry (SQL, versions, the API) and publishes each version as a
`ProjectPublished` event on the compacted topic `flywheel.projects`. Services that validate or
profile inputs (ingest, lake, monitor) hold a `Catalog` that a `CatalogFollower` fills: it reads
the topic from its start at boot (so a restarted service knows every project before it serves)
and then follows it. No consumer group: every replica reads everything, and nothing is committed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from google.protobuf.message import DecodeError

from services.events import EventProducer, new_meta
from services.events.topics import PROJECTS
from services.genproto.flywheel.v1 import events_pb2 as ev
from services.projects.loading import SpecInvalid, parse_spec_json, spec_json, spec_sha256
from services.projects.spec import ProjectSpec

log = logging.getLogger(__name__)


class UnknownProject(LookupError):
    """No project of that name (or version) has been published."""


@dataclass(frozen=True)
class Project:
    spec: ProjectSpec
    version: int
    sha256: str

    @property
    def name(self) -> str:
        return self.spec.name


class Catalog:
    """Every published version of every project; thread-safe."""

    def __init__(self, projects: list[Project] | None = None) -> None:
        self._versions: dict[str, dict[int, Project]] = {}
        self._lock = threading.Lock()
        for p in projects or []:
            self.add(p)

    def add(self, project: Project) -> None:
        with self._lock:
            self._versions.setdefault(project.name, {})[project.version] = project

    def apply(self, event: ev.ProjectPublished) -> Project | None:
        """Take one event; None (logged) when its spec does not validate here."""
        try:
            spec = parse_spec_json(event.spec_json)
        except SpecInvalid as exc:
            log.warning("project event refused", extra={"project": event.name, "reason": str(exc)})
            return None
        if spec.name != event.name or event.version < 1:
            log.warning("project event refused", extra={"project": event.name, "reason": "name or version mismatch"})
            return None
        project = Project(spec, int(event.version), event.sha256 or spec_sha256(spec))
        self.add(project)
        return project

    def get(self, name: str, version: int = 0) -> Project:
        """The latest version (or the given one) of a project; UnknownProject otherwise."""
        with self._lock:
            versions = self._versions.get(name)
            if not versions:
                known = ", ".join(sorted(self._versions)) or "none yet"
                raise UnknownProject(f"no project {name!r} (known: {known}); create it with `flywheel projects create`")
            if version:
                if version not in versions:
                    raise UnknownProject(f"project {name!r} has no version {version} (latest {max(versions)})")
                return versions[version]
            return versions[max(versions)]

    def latest(self) -> list[Project]:
        with self._lock:
            return [v[max(v)] for _, v in sorted(self._versions.items())]

    def __contains__(self, name: str) -> bool:
        with self._lock:
            return name in self._versions


def project_event(project: Project, source: str) -> ev.ProjectPublished:
    from services.events.codec import deterministic_id

    return ev.ProjectPublished(
        meta=new_meta(source, event_id=deterministic_id("project", project.name, project.version)),
        name=project.name,
        version=project.version,
        spec_json=spec_json(project.spec),
        sha256=project.sha256,
    )


def publish_project(producer: EventProducer, project: Project, source: str = "trainer") -> None:
    """Send a project version to flywheel.projects and wait for the broker's acknowledgement."""
    producer.send(PROJECTS.name, project_event(project, source), key=project.name.encode())
    producer.flush()


class CatalogFollower:
    """Fills a Catalog from flywheel.projects: `load()` reads to the current end, `run()` follows."""

    def __init__(
        self,
        bootstrap: str,
        catalog: Catalog,
        stop: threading.Event,
        poll_s: float = 0.5,
        security: dict[str, str] | None = None,
    ) -> None:
        self.catalog = catalog
        self._stop = stop
        self._poll_s = poll_s
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"projects-{uuid.uuid4().hex[:12]}",  # never joined: partitions are assigned
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                **(security or {}),  # SASL/SSL settings (CommonSettings.kafka_security)
            }
        )
        self._loaded = threading.Event()
        self._error = ""
        self.last_poll = 0.0

    def load(self, timeout_s: float = 30.0) -> int:
        """Assign every partition from the start and read up to the current end; returns events taken."""
        deadline = time.monotonic() + timeout_s
        meta = self._consumer.list_topics(PROJECTS.name, timeout=timeout_s).topics.get(PROJECTS.name)
        if meta is None or meta.error is not None:
            raise RuntimeError(f"topic {PROJECTS.name} is missing: {meta.error if meta else 'not found'}")
        partitions = sorted(meta.partitions)
        ends = {}
        for p in partitions:
            low, high = self._consumer.get_watermark_offsets(TopicPartition(PROJECTS.name, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
        self._consumer.assign([TopicPartition(PROJECTS.name, p, OFFSET_BEGINNING) for p in partitions])
        taken = 0
        position = dict.fromkeys(ends, -1)
        while any(position[p] + 1 < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"reading {PROJECTS.name} took longer than {timeout_s} s")
            taken += self._poll(0.5)
            for tp in self._consumer.position([TopicPartition(PROJECTS.name, p) for p in ends]):
                if tp.offset >= 0:
                    position[tp.partition] = tp.offset - 1
        self._loaded.set()
        log.info("projects loaded", extra={"projects": [p.name for p in self.catalog.latest()], "events": taken})
        return taken

    def _poll(self, timeout_s: float) -> int:
        taken = 0
        for msg in self._consumer.consume(100, timeout_s):
            if msg.error() is not None:
                continue
            event = ev.ProjectPublished()
            try:
                event.ParseFromString(msg.value() or b"")
            except DecodeError:
                log.warning("undecodable project event", extra={"offset": msg.offset()})
                continue
            if self.catalog.apply(event) is not None:
                taken += 1
        self.last_poll = time.monotonic()
        return taken

    def load_and_follow(self, retry_s: float = 2.0) -> None:
        """load() until it succeeds (a broker still starting), then run(): for a thread of its own."""
        while not self._stop.is_set():
            try:
                self.load()
                break
            except (RuntimeError, KafkaException) as exc:
                self._error = str(exc)
                self._stop.wait(retry_s)
        self.run()

    def run(self) -> None:
        """Follow the topic until stopped (call after load())."""
        try:
            while not self._stop.is_set():
                try:
                    self._poll(self._poll_s)
                    self._error = ""
                except KafkaException as exc:
                    self._error = str(exc)
                    self._stop.wait(1.0)
        finally:
            self._consumer.close()

    def healthy(self) -> tuple[bool, str]:
        if not self._loaded.is_set():
            return False, "project catalog not loaded yet"
        if self._error:
            return False, f"project catalog: {self._error}"
        return True, f"{len(self.catalog.latest())} project(s)"
