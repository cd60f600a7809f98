"""The project registry: specs in SQL, one row per version, each version published on flywheel.projects.

The trainer owns it because it owns what a project decides most (families, training, the model
registry); other services learn specs from the compacted `flywheel.projects` topic
(services/projects/catalog.py), never from this table (docs/PROJECTS.md says why).

Versions: creating a spec equal to the latest version (same canonical JSON) returns that version;
any other change makes version N+1. A new version may change the model, SLO, drift and Label
Studio settings, the description; it may not change `input` or `task` — the labels already stored
were validated against them — so such a change asks for a new project name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from services.projects import ProjectSpec, SpecInvalid, load_spec_file, parse_spec_json, spec_json, spec_sha256
from services.projects.catalog import Project
from services.storage import Database
from services.trainer.errors import InvalidRequest, ProjectConflict, ProjectNotFound
from services.trainer.tables import projects

log = logging.getLogger(__name__)

Publisher = Callable[[Project], None]


def _project(row) -> Project:  # type: ignore[no-untyped-def]
    return Project(parse_spec_json(row.spec), int(row.version), row.sha256)


class ProjectRegistry:
    def __init__(self, db: Database, publish: Publisher | None = None) -> None:
        self._db = db
        self._publish = publish

    def create(self, spec: ProjectSpec) -> tuple[Project, bool]:
        """Register a spec; returns (the version in force, whether it is new). Published either way,
        so retrying a create whose event did not reach the broker heals it."""
        digest = spec_sha256(spec)
        for _attempt in range(3):
            latest = self._latest(spec.name)
            if latest is not None and latest.sha256 == digest:
                self._emit(latest)
                return latest, False
            if latest is not None:
                _check_compatible(latest, spec)
            project = Project(spec, (latest.version if latest else 0) + 1, digest)
            try:
                with self._db.session() as s:
                    s.execute(
                        projects.insert().values(
                            name=spec.name,
                            version=project.version,
                            sha256=digest,
                            spec=spec_json(spec),
                            created_at=datetime.now(UTC),
                        )
                    )
            except IntegrityError:
                continue  # another writer took this version number: look again
            log.info("project registered", extra={"project": spec.name, "version": project.version})
            self._emit(project)
            return project, True
        raise ProjectConflict(f"project {spec.name!r} is being changed by someone else; try again")

    def get(self, name: str, version: int = 0) -> Project:
        with self._db.session() as s:
            q = select(projects).where(projects.c.name == name)
            q = q.where(projects.c.version == version) if version else q.order_by(projects.c.version.desc())
            row = s.execute(q.limit(1)).first()
        if row is None:
            what = f"project {name!r}" + (f" version {version}" if version else "")
            raise ProjectNotFound(f"no {what}; create it with `flywheel projects create -f SPEC.yaml`")
        return _project(row)

    def versions(self, name: str) -> list[Project]:
        with self._db.session() as s:
            rows = s.execute(select(projects).where(projects.c.name == name).order_by(projects.c.version)).all()
        if not rows:
            raise ProjectNotFound(f"no project {name!r}")
        return [_project(r) for r in rows]

    def list(self) -> list[Project]:
        """The latest version of every project, by name."""
        latest = select(projects.c.name, func.max(projects.c.version).label("v")).group_by(projects.c.name).subquery()
        with self._db.session() as s:
            rows = s.execute(
                select(projects)
                .join(latest, (projects.c.name == latest.c.name) & (projects.c.version == latest.c.v))
                .order_by(projects.c.name)
            ).all()
        return [_project(r) for r in rows]

    def publish_all(self) -> int:
        """Publish every project's latest version again (a broker that lost the topic relearns it)."""
        found = self.list()
        for p in found:
            self._emit(p)
        return len(found)

    def register_files(self, paths: list[Path]) -> list[Project]:
        """Create the specs in these files (or folders of `*.yaml`); a bad file stops start-up with its problems."""
        files: list[Path] = []
        for path in paths:
            files += sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
        out = []
        for f in files:
            try:
                spec = load_spec_file(f)
            except SpecInvalid as exc:
                raise InvalidRequest(f"{f}: {exc}") from None
            out.append(self.create(spec)[0])
        return out

    def _latest(self, name: str) -> Project | None:
        try:
            return self.get(name)
        except ProjectNotFound:
            return None

    def _emit(self, project: Project) -> None:
        if self._publish is not None:
            self._publish(project)


def _check_compatible(latest: Project, spec: ProjectSpec) -> None:
    changed = [part for part in ("input", "task") if getattr(latest.spec, part) != getattr(spec, part)]
    if changed:
        raise ProjectConflict(
            f"project {spec.name!r} v{latest.version} has a different {' and '.join(changed)}: the labels stored "
            "for it were validated against those; give the changed spec a new project name"
        )
