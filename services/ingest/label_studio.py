"""Label Studio webhook payloads → LabelInputs.

Shapes (Label Studio's `webhooks/models.py` and its webhook reference):
* ANNOTATION_CREATED / ANNOTATION_UPDATED: `{"action", "annotation": {...}, "task": {...}, "project": {...}}`
* ANNOTATIONS_CREATED: `{"action", "annotation": [{...}, ...], "task": [{...}, ...], "project": {...}}`
* ANNOTATIONS_DELETED: `{"action", "annotations": [{"id": 17}, ...], "project": {...}}`

An annotation carries `id`, `result` (a list of regions; a digits project uses a `choices`
control, so the label is `value.choices[0]`), `task` (the task id, or the task itself),
`completed_by` (a user id, or a user object), `created_at`, `updated_at`, `was_cancelled`.
The task's `data` holds the image as a `data:image/png;base64,…` URI (ingest never fetches
URLs) or `features` (64 numbers), and optionally `example_id`; without one the example is
`label-studio-<project>-<task>`.  Event ids come from annotation id, updated time and action.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.ingest.errors import InvalidInput
from services.ingest.labels import CREATED, DELETED, UPDATED, LabelInput

SOURCE = "label-studio"
LABEL_ACTIONS = {
    "ANNOTATION_CREATED": CREATED,
    "ANNOTATIONS_CREATED": CREATED,
    "ANNOTATION_UPDATED": UPDATED,
    "ANNOTATIONS_DELETED": DELETED,
}


@dataclass
class WebhookBatch:
    action: str
    inputs: list[LabelInput] = field(default_factory=list)
    # Why nothing or less was taken (another action, skipped tasks), for the response.
    ignored: list[str] = field(default_factory=list)


def annotation_id_of(raw_id: object) -> str:
    return f"ls-{raw_id}"


def parse_webhook(payload: object) -> WebhookBatch:
    if not isinstance(payload, dict):
        raise InvalidInput("body", "a Label Studio webhook payload is a JSON object")
    action = payload.get("action")
    if not isinstance(action, str) or not action:
        raise InvalidInput("action", "is required (e.g. ANNOTATION_CREATED)")
    if action not in LABEL_ACTIONS:
        return WebhookBatch(action, ignored=[f"action {action} carries no labels"])
    project_id = _project_id(payload.get("project"))
    if action == "ANNOTATIONS_DELETED":
        return _deleted(action, payload, project_id)
    many = action == "ANNOTATIONS_CREATED"
    annotations = payload.get("annotation")
    if many:
        if not isinstance(annotations, list):
            raise InvalidInput("annotation", f"{action} carries a list of annotations")
    else:
        if not isinstance(annotations, dict):
            raise InvalidInput("annotation", f"{action} carries one annotation object")
        annotations = [annotations]
    tasks = _tasks_by_id(payload.get("task"))
    batch = WebhookBatch(action)
    for i, ann in enumerate(annotations):
        where = f"annotation[{i}]" if many else "annotation"
        if not isinstance(ann, dict):
            raise InvalidInput(where, "must be an object")
        if ann.get("was_cancelled"):
            batch.ignored.append(f"{where}: skipped task (was_cancelled), no label")
            continue
        batch.inputs.append(_annotation(action, ann, tasks, project_id, where))
    return batch


def _annotation(action: str, ann: dict, tasks: dict[str, dict], project_id: str, where: str) -> LabelInput:
    ann_id = ann.get("id")
    if ann_id is None or isinstance(ann_id, bool):
        raise InvalidInput(f"{where}.id", "is required")
    task_ref = ann.get("task")
    task = task_ref if isinstance(task_ref, dict) else tasks.get(str(task_ref))
    if task is None:
        raise InvalidInput("task", f"no task object for annotation {ann_id} (task {task_ref!r})")
    data = task.get("data")
    if not isinstance(data, dict):
        raise InvalidInput("task.data", "must be an object holding the image")
    updated_raw = ann.get("updated_at") or ann.get("created_at")
    updated = _time(updated_raw, f"{where}.updated_at")
    created = _time(ann.get("created_at"), f"{where}.created_at") if ann.get("created_at") else None
    image, features = _payload(data)
    example_id = data.get("example_id") or f"label-studio-{project_id}-{task.get('id')}"
    label_action = LABEL_ACTIONS[action]
    return LabelInput(
        example_id=str(example_id),
        label=_label(ann.get("result"), f"{where}.result"),
        annotator=_annotator(ann.get("completed_by")),
        source=SOURCE,
        action=label_action,
        image=image,
        features=features,
        annotation_id=annotation_id_of(ann_id),
        created_at=created,
        updated_at=updated,
        identity=f"{ann_id}|{updated_raw}|{label_action}",
        where=where,
    )


def _deleted(action: str, payload: dict, project_id: str) -> WebhookBatch:
    annotations = payload.get("annotations")
    if not isinstance(annotations, list):
        raise InvalidInput("annotations", "ANNOTATIONS_DELETED carries a list of {id} objects")
    batch = WebhookBatch(action)
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict) or ann.get("id") is None:
            raise InvalidInput(f"annotations[{i}].id", "is required")
        # The example is looked up from the stored annotation; the id alone identifies it.
        batch.inputs.append(
            LabelInput(
                example_id=f"label-studio-{project_id}",
                label="",
                annotator="",
                source=SOURCE,
                action=DELETED,
                annotation_id=annotation_id_of(ann["id"]),
                identity=f"{ann['id']}||{DELETED}",
                where=f"annotations[{i}]",
            )
        )
    return batch


def _label(result: Any, where: str) -> str:
    if not isinstance(result, list) or not result:
        raise InvalidInput(where, "is empty: the annotation has no choice")
    for region in result:
        value = region.get("value") if isinstance(region, dict) else None
        choices = value.get("choices") if isinstance(value, dict) else None
        if isinstance(choices, list) and choices:
            if len(choices) != 1:
                raise InvalidInput(f"{where}.value.choices", f"has {len(choices)} choices; exactly one is expected")
            return str(choices[0])
    raise InvalidInput(where, "has no `choices` region (the digits project labels with a Choices control)")


def _annotator(completed_by: Any) -> str:
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or completed_by.get("id") or "")
    return "" if completed_by is None else f"label-studio-user-{completed_by}"


def _payload(data: dict) -> tuple[bytes | None, list[float] | None]:
    if "features" in data:
        features = data["features"]
        if not isinstance(features, list):
            raise InvalidInput("task.data.features", "must be a list of 64 numbers")
        return None, features
    image = data.get("image")
    if not isinstance(image, str) or not image:
        raise InvalidInput("task.data.image", "is required (a data:image/png;base64,… URI)")
    if not image.startswith("data:"):
        raise InvalidInput("task.data.image", "must be a data: URI; ingest does not fetch URLs")
    header, _, encoded = image.partition(",")
    if not header.endswith(";base64"):
        raise InvalidInput("task.data.image", "data: URI must be base64-encoded")
    try:
        return base64.b64decode(encoded, validate=True), None
    except (binascii.Error, ValueError):
        raise InvalidInput("task.data.image", "is not valid base64") from None


def _tasks_by_id(tasks: Any) -> dict[str, dict]:
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        return {}
    return {str(t.get("id")): t for t in tasks if isinstance(t, dict)}


def _project_id(project: Any) -> str:
    if isinstance(project, dict) and project.get("id") is not None:
        return str(project["id"])
    return "0"


def _time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidInput(where, "is required (ISO 8601)")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(where, f"{value!r} is not an ISO 8601 time") from None
