"""The trainer's domain errors. No status codes here: transport/status.py maps them."""

from __future__ import annotations


class TrainerError(Exception):
    """Base of every error the trainer reports to a caller."""


class InvalidRequest(TrainerError):
    """A request is malformed or names something unknown (model family, hyperparameter, stage)."""


class JobSpecInvalid(InvalidRequest):
    """A training request's field is well formed but cannot run here (an image this trainer does not allow,
    more GPUs than it grants, requests above the limits); the message names the field."""


class JobNotFound(TrainerError):
    """No job has this id."""


class JobLogGone(JobNotFound):
    """The job exists but its log does not any more (its Kubernetes Job was removed after its TTL, say)."""


class JobLogUnavailable(TrainerError):
    """The job's log cannot be read now (its pod has not started, it ran where no log is kept); the
    message says why and what to do."""


class ModelNotFound(TrainerError):
    """No registered model version matches."""


class SnapshotNotFound(TrainerError):
    """The snapshot does not exist in the lake."""


class SnapshotInvalid(TrainerError):
    """The snapshot exists but does not match the contract (manifest, checksums, columns), or the lake
    cannot cut one (no labels yet)."""


class LakeUnavailable(TrainerError):
    """The lake could not be asked for a snapshot."""


class PromotionRefused(TrainerError):
    """The promotion gate refused a version; the message says which comparison failed and by how much."""


class JobConflict(TrainerError):
    """The job is in a state that does not allow this (e.g. cancelling a finished job)."""


class TrainingFailed(TrainerError):
    """Training could not produce a usable model; the message says why."""


class OverfitCheckFailed(TrainingFailed):
    """The model could not overfit a single batch: a bug or a broken setup, found before the real run."""


class JobCancelled(TrainerError):
    """The job was cancelled while it ran."""


class RunnerFailed(TrainerError):
    """The runner could not start or stop the job (the Kubernetes API refused, say); the message says why."""


class ProjectNotFound(TrainerError):
    """No project (or project version) of that name is registered."""


class ProjectConflict(TrainerError):
    """A new version of a project may not change what its stored labels were validated against."""


class PublishFailed(TrainerError):
    """The broker did not take an event (a project version, say); the caller may retry."""
