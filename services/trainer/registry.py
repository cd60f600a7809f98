"""The model registry in SQL: versions with lineage and stages, the promotion gate, ModelPublished events.

Stages: candidate → canary → production, and archived. Promoting to canary or production passes
the gate unless forced: the version's combined number (test split) must beat the best baseline's
and the current production model's by `margin`. The production comparison uses the number the
training job measured by running production's artifact on the candidate's own test split when it
could (a fair comparison on the same data), else production's recorded number. Promoting a version
to production archives the previous production version.

With a remote repository (`s3://…`), registering a version first publishes its folder there, the
manifest last (services/storage/model_store.py): every way a version arrives (trained, external, the
project's own code) goes through `register`, so no version is announced before model servers can pull it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import func, select, update

from services.config import ConfigError
from services.events.codec import deterministic_id, new_meta
from services.genproto.flywheel.v1 import events_pb2 as ev
from services.storage import Database
from services.storage.model_store import RemotePublisher
from services.storage.s3 import S3Unavailable
from services.trainer.errors import InvalidRequest, ModelNotFound, PromotionRefused
from services.trainer.tables import model_versions

STAGES = ("candidate", "canary", "production", "archived")
GATED = ("canary", "production")

Publisher = Callable[[ev.ModelPublished], None]


@dataclass
class VersionRecord:
    model: str
    version: int
    stage: str
    model_family: str
    snapshot_id: str
    git_commit: str
    job_id: str
    hyperparameters: dict[str, str]
    metrics: dict[str, float]
    artifacts: dict[str, str]
    platform: str = "onnxruntime_onnx"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    lineage: str = "trained"  # or "external": a model trained elsewhere (flywheel models deploy)
    project_version: int = 0


def _record(row) -> VersionRecord:  # type: ignore[no-untyped-def]
    return VersionRecord(
        model=row.model,
        version=int(row.version),
        stage=row.stage,
        model_family=row.model_family,
        snapshot_id=row.snapshot_id,
        git_commit=row.git_commit,
        job_id=row.job_id,
        hyperparameters=json.loads(row.hyperparameters),
        metrics=json.loads(row.metrics),
        artifacts=json.loads(row.artifacts),
        platform=row.platform,
        created_at=row.created_at,
        lineage=row.lineage,
        project_version=int(row.project_version),
    )


def remote_publisher(url: str, local_repository: Path) -> RemotePublisher | None:
    """The publisher for FLYWHEEL_TRAINER_REMOTE_MODEL_REPOSITORY (None: empty); an unusable bucket stops start-up."""
    if not url:
        return None
    try:
        return RemotePublisher(url, local_repository)
    except S3Unavailable as exc:
        raise ConfigError(f"invalid configuration:\n  FLYWHEEL_TRAINER_REMOTE_MODEL_REPOSITORY: {exc}") from None


def best_baseline_name(metrics: dict[str, float]) -> str:
    """The baseline whose test combined number is the best one (metrics keep numbers only, not names)."""
    best = metrics.get("baseline_best_test_combined")
    scores = {
        key.removeprefix("baseline_").removesuffix("_test_combined"): value
        for key, value in metrics.items()
        if key.startswith("baseline_") and key.endswith("_test_combined") and key != "baseline_best_test_combined"
    }
    matching = sorted(name for name, value in scores.items() if value == best)
    if matching:
        return matching[0]
    return max(scores, key=scores.__getitem__) if scores else "no baseline recorded"


class Registry:
    def __init__(
        self,
        db: Database,
        *,
        repository_uri: str,
        margin: float = 0.005,
        publish: Publisher | None = None,
        remote: RemotePublisher | None = None,
    ) -> None:
        self._db = db
        self._remote = remote
        self._repository_uri = remote.url if remote is not None else repository_uri
        self.margin = margin
        self._publish = publish

    # -- reads ----------------------------------------------------------------------------
    def list(self, model: str = "") -> list[VersionRecord]:
        q = select(model_versions).order_by(model_versions.c.model, model_versions.c.version)
        if model:
            q = q.where(model_versions.c.model == model)
        with self._db.session() as s:
            return [_record(r) for r in s.execute(q)]

    def get(self, model: str, version: int | str) -> VersionRecord:
        try:
            v = int(version)
        except ValueError:
            raise InvalidRequest(f"version {version!r} is not a number") from None
        with self._db.session() as s:
            row = s.execute(
                select(model_versions).where(model_versions.c.model == model, model_versions.c.version == v)
            ).first()
        if row is None:
            raise ModelNotFound(f"model {model!r} has no version {v}")
        return _record(row)

    def production(self, model: str) -> VersionRecord | None:
        with self._db.session() as s:
            row = s.execute(
                select(model_versions)
                .where(model_versions.c.model == model, model_versions.c.stage == "production")
                .order_by(model_versions.c.version.desc())
            ).first()
        return _record(row) if row else None

    def max_version(self, model: str) -> int:
        with self._db.session() as s:
            return int(s.scalar(select(func.max(model_versions.c.version)).where(model_versions.c.model == model)) or 0)

    # -- writes ---------------------------------------------------------------------------
    def register(self, rec: VersionRecord) -> VersionRecord:
        """Record a new version as a candidate and publish it (its files first, to the remote repository)."""
        rec.stage = "candidate"
        if self._remote is not None:  # the siblings (int8, TorchScript) first, the model's own version last
            for folder in self._remote.folders_of(rec.model, rec.version, rec.artifacts):
                self._remote.publish(folder, rec.version)
        now = datetime.now(UTC)
        with self._db.session() as s:
            s.execute(
                model_versions.insert().values(
                    model=rec.model,
                    version=rec.version,
                    stage=rec.stage,
                    model_family=rec.model_family,
                    snapshot_id=rec.snapshot_id,
                    git_commit=rec.git_commit,
                    job_id=rec.job_id,
                    hyperparameters=json.dumps(rec.hyperparameters, sort_keys=True),
                    metrics=json.dumps(rec.metrics, sort_keys=True),
                    artifacts=json.dumps(rec.artifacts, sort_keys=True),
                    platform=rec.platform,
                    created_at=rec.created_at,
                    updated_at=now,
                    lineage=rec.lineage,
                    project_version=rec.project_version,
                )
            )
        self._emit(rec)
        return rec

    def gate(self, rec: VersionRecord) -> list[str]:
        """Why this version may not go to canary/production (empty: it may)."""
        m = rec.metrics
        reasons = []
        combined = m.get("test_combined")
        if combined is None:
            return ["the version has no test_combined metric"]
        baseline = m.get("baseline_best_test_combined")
        if baseline is None:
            reasons.append("no baseline was measured for this version")
        elif combined < baseline + self.margin:
            reasons.append(
                f"combined {combined:.4f} does not beat the best baseline ({best_baseline_name(m)}, "
                f"{baseline:.4f}) by the margin {self.margin}"
            )
        prod = self.production(rec.model)
        if prod is not None and prod.version != rec.version:
            same_split = m.get("production_test_combined") if m.get("production_version") == prod.version else None
            prod_score = same_split if same_split is not None else prod.metrics.get("test_combined", float("-inf"))
            where = "on this version's test split" if same_split is not None else "as recorded"
            if combined < prod_score + self.margin:
                reasons.append(
                    f"combined {combined:.4f} does not beat production v{prod.version} "
                    f"({prod_score:.4f} {where}) by the margin {self.margin}"
                )
        return reasons

    def promote(self, model: str, version: int | str, stage: str, force: bool = False) -> VersionRecord:
        if stage not in STAGES or stage == "candidate":
            raise InvalidRequest(f"stage {stage!r}: promote to one of canary, production, archived")
        rec = self.get(model, version)
        if stage in GATED and not force:
            reasons = self.gate(rec)
            if reasons:
                raise PromotionRefused(f"{model} v{rec.version} not promoted to {stage}: " + "; ".join(reasons))
        changed: list[VersionRecord] = []
        now = datetime.now(UTC)
        with self._db.session() as s:
            if stage == "production":
                old = s.execute(
                    select(model_versions.c.version).where(
                        model_versions.c.model == model,
                        model_versions.c.stage == "production",
                        model_versions.c.version != rec.version,
                    )
                ).scalars()
                for v in list(old):
                    s.execute(
                        update(model_versions)
                        .where(model_versions.c.model == model, model_versions.c.version == v)
                        .values(stage="archived", updated_at=now)
                    )
                    changed.append(v)  # type: ignore[arg-type]
            s.execute(
                update(model_versions)
                .where(model_versions.c.model == model, model_versions.c.version == rec.version)
                .values(stage=stage, updated_at=now)
            )
        rec.stage = stage
        for v in changed:
            self._emit(self.get(model, v))  # type: ignore[arg-type]
        self._emit(rec)
        return rec

    def _emit(self, rec: VersionRecord) -> None:
        if self._publish is None:
            return
        meta = new_meta("trainer", event_id=deterministic_id("model", rec.model, rec.version, rec.stage))
        event = ev.ModelPublished(
            meta=meta,
            model=rec.model,
            version=str(rec.version),
            stage=rec.stage,
            repository_uri=self._repository_uri,
            snapshot_id=rec.snapshot_id,
            metrics={k: float(v) for k, v in rec.metrics.items() if isinstance(v, (int, float))},
            platform=rec.platform,
            lineage=rec.lineage,
            project=rec.model,  # a project serves one model, named after it
        )
        self._publish(event)


def timestamp(dt: datetime | None) -> Timestamp | None:
    if dt is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(dt if dt.tzinfo else dt.replace(tzinfo=UTC))
    return ts
