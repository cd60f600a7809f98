"""Label Studio webhook payloads (and project exports) → LabelInputs for one Flywheel project.

Shapes (Label Studio 1.23's webhooks, checked against the real tool: /work/shared/LABEL-STUDIO-FACTS.md):
* ANNOTATION_CREATED / ANNOTATION_UPDATED: `{"action", "annotation": {...}, "task": {...}, "project": {...}}`
* ANNOTATIONS_CREATED: `{"action", "annotation": [{...}, ...], "task": [{...}, ...], "project": {...}}`
* ANNOTATIONS_DELETED: `{"action", "annotations": [{"id": 17}, ...], "project": {...}}`

The class comes from a `Choices` or `Labels`-style control: the one the project's spec names
(`label_studio.control`), else the one control in the payload's `parsed_label_config` whose labels
are the project's, else any region carrying choices or labels. Every region of that control must
name the same single class. The input comes from `task.data`: for image projects the key the spec
names (`label_studio.data_key`, else the control's input, else `image`) holds a `data:` URI (taken
as it is) or a reference Label Studio stores — `/data/upload/…`, `/data/local-files/?d=…`,
`s3://`, `gs://`, `http(s)://` — which becomes a *pending* label: the webhook answers at once and
services/ingest/fetching.py reads the data later (Label Studio waits at most a second). Text
projects read their text from that key; tabular projects read each column from `task.data` by name.
Without `data.example_id` the example is `label-studio-<project>-<task>`; event ids come from the
annotation id, its update time and the action.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from services.ingest.errors import InvalidInput
from services.ingest.labels import CREATED, DELETED, UPDATED, LabelInput
from services.projects.catalog import Project

SOURCE = "label-studio"
LABEL_ACTIONS = {
    "ANNOTATION_CREATED": CREATED,
    "ANNOTATIONS_CREATED": CREATED,
    "ANNOTATION_UPDATED": UPDATED,
    "ANNOTATIONS_DELETED": DELETED,
}
# Control tags whose regions name classes, and the key of `value` that holds them.
CLASS_CONTROLS = {
    "choices": "choices",
    "labels": "labels",
    "rectanglelabels": "rectanglelabels",
    "polygonlabels": "polygonlabels",
    "ellipselabels": "ellipselabels",
    "keypointlabels": "keypointlabels",
    "brushlabels": "brushlabels",
    "taxonomy": "taxonomy",
}
FETCHED_PREFIXES = ("/data/", "http://", "https://", "s3://", "gs://")


@dataclass(frozen=True)
class Pending:
    """A label whose input Label Studio only references: fetched later, then validated like any other."""

    input: LabelInput
    uri: str


@dataclass
class WebhookBatch:
    action: str
    inputs: list[LabelInput] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    # Why nothing or less was taken (another action, skipped tasks), for the response.
    ignored: list[str] = field(default_factory=list)


def annotation_id_of(raw_id: object) -> str:
    return f"ls-{raw_id}"


@dataclass(frozen=True)
class Mapping:
    """Where this project's class and input sit in a Label Studio task."""

    control: str | None  # None: any region with choices/labels
    data_key: str

    @classmethod
    def of(cls, project: Project, ls_project: Any) -> Mapping:
        ls = project.spec.label_studio
        control, data_key = ls.control, ls.data_key
        parsed = ls_project.get("parsed_label_config") if isinstance(ls_project, dict) else None
        if control is None and isinstance(parsed, dict):
            ours = set(project.spec.labels)
            candidates = [
                name
                for name, c in parsed.items()
                if isinstance(c, dict)
                and str(c.get("type", "")).lower() in CLASS_CONTROLS
                and set(map(str, c.get("labels") or [])) & ours
            ]
            if len(candidates) == 1:
                control = candidates[0]
        if data_key is None and control is not None and isinstance(parsed, dict):
            inputs = (parsed.get(control) or {}).get("inputs") if isinstance(parsed.get(control), dict) else None
            if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) and inputs[0].get("value"):
                data_key = str(inputs[0]["value"])
        default_key = "text" if project.spec.kind == "text" else "image"
        return cls(control, data_key or default_key)


def parse_webhook(payload: object, project: Project) -> WebhookBatch:
    if not isinstance(payload, dict):
        raise InvalidInput("body", "a Label Studio webhook payload is a JSON object")
    action = payload.get("action")
    if not isinstance(action, str) or not action:
        raise InvalidInput("action", "is required (e.g. ANNOTATION_CREATED)")
    if action not in LABEL_ACTIONS:
        return WebhookBatch(action, ignored=[f"action {action} carries no labels"])
    ls_project_id = _project_id(payload.get("project"))
    if action == "ANNOTATIONS_DELETED":
        return _deleted(action, payload, ls_project_id, project)
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
    mapping = Mapping.of(project, payload.get("project"))
    batch = WebhookBatch(action)
    for i, ann in enumerate(annotations):
        where = f"annotation[{i}]" if many else "annotation"
        if not isinstance(ann, dict):
            raise InvalidInput(where, "must be an object")
        if ann.get("was_cancelled"):
            batch.ignored.append(f"{where}: skipped task (was_cancelled), no label")
            continue
        task_ref = ann.get("task")
        task = task_ref if isinstance(task_ref, dict) else tasks.get(str(task_ref))
        if task is None:
            raise InvalidInput("task", f"no task object for annotation {ann.get('id')} (task {task_ref!r})")
        item = _annotation(LABEL_ACTIONS[action], ann, task, ls_project_id, project, mapping, where)
        (batch.pending if isinstance(item, Pending) else batch.inputs).append(item)  # type: ignore[arg-type]
    return batch


def parse_export(tasks: object, project: Project, ls_project: dict | None = None) -> WebhookBatch:
    """A Label Studio project export (JSON: a list of tasks, each with its `annotations`) as one batch."""
    if not isinstance(tasks, list):
        raise InvalidInput("export", "a Label Studio JSON export is a list of tasks")
    mapping = Mapping.of(project, ls_project)
    ls_project_id = _project_id(ls_project)
    batch = WebhookBatch("EXPORT")
    for t, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise InvalidInput(f"export[{t}]", "must be a task object")
        for a, ann in enumerate(task.get("annotations") or []):
            where = f"export[{t}].annotations[{a}]"
            if not isinstance(ann, dict):
                raise InvalidInput(where, "must be an object")
            if ann.get("was_cancelled"):
                batch.ignored.append(f"{where}: skipped task (was_cancelled), no label")
                continue
            item = _annotation(CREATED, ann, task, ls_project_id, project, mapping, where)
            (batch.pending if isinstance(item, Pending) else batch.inputs).append(item)  # type: ignore[arg-type]
    return batch


def _annotation(
    label_action: str, ann: dict, task: dict, ls_project_id: str, project: Project, mapping: Mapping, where: str
) -> LabelInput | Pending:
    ann_id = ann.get("id")
    if ann_id is None or isinstance(ann_id, bool):
        raise InvalidInput(f"{where}.id", "is required")
    data = task.get("data")
    if not isinstance(data, dict):
        raise InvalidInput("task.data", "must be an object holding the example's input")
    updated_raw = ann.get("updated_at") or ann.get("created_at")
    updated = _time(updated_raw, f"{where}.updated_at")
    created = _time(ann.get("created_at"), f"{where}.created_at") if ann.get("created_at") else None
    example_id = data.get("example_id") or f"label-studio-{ls_project_id}-{task.get('id')}"
    base = LabelInput(
        example_id=str(example_id),
        label=_label(ann.get("result"), mapping.control, f"{where}.result"),
        annotator=_annotator(ann.get("completed_by")),
        source=SOURCE,
        action=label_action,
        project=project.name,
        annotation_id=annotation_id_of(ann_id),
        created_at=created,
        updated_at=updated,
        identity=f"{ann_id}|{updated_raw}|{label_action}",
        where=where,
    )
    kind = project.spec.kind
    if kind == "tabular":
        columns = [c.name for c in project.spec.input.columns]  # type: ignore[union-attr]
        return _with(base, row={c: data[c] for c in columns if c in data})
    key = mapping.data_key
    if kind == "image" and key not in data and isinstance(data.get("features"), list):
        return _with(base, features=data["features"])  # an image given as its pixels (small images)
    value = data.get(key)
    if kind == "text":
        if not isinstance(value, str):
            raise InvalidInput(f"task.data.{key}", "is required: the text to classify")
        return _with(base, text=value)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"task.data.{key}", "is required (a data: URI, or a Label Studio file or URL)")
    if value.startswith("data:"):
        return _with(base, image=_data_uri(value, f"task.data.{key}"))
    if value.startswith(FETCHED_PREFIXES):
        return Pending(base, value)
    raise InvalidInput(
        f"task.data.{key}",
        f"{value[:80]!r} is neither a data: URI nor a reference ingest fetches ({', '.join(FETCHED_PREFIXES)})",
    )


def _with(base: LabelInput, **values: Any) -> LabelInput:
    return replace(base, **values)


def _deleted(action: str, payload: dict, ls_project_id: str, project: Project) -> WebhookBatch:
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
                example_id=f"label-studio-{ls_project_id}",
                label="",
                annotator="",
                source=SOURCE,
                action=DELETED,
                project=project.name,
                annotation_id=annotation_id_of(ann["id"]),
                identity=f"{ann['id']}||{DELETED}",
                where=f"annotations[{i}]",
            )
        )
    return batch


def _label(result: Any, control: str | None, where: str) -> str:
    if not isinstance(result, list) or not result:
        raise InvalidInput(where, "is empty: the annotation has no class")
    found: list[str] = []
    for region in result:
        if not isinstance(region, dict):
            continue
        if control is not None and region.get("from_name") != control:
            continue
        value = region.get("value")
        kind = str(region.get("type", "")).lower()
        key = CLASS_CONTROLS.get(kind)
        names = value.get(key) if isinstance(value, dict) and key else None
        if names is None and isinstance(value, dict):
            names = value.get("choices") or value.get("labels")
        if isinstance(names, list):
            found += [str(n[-1] if isinstance(n, list) and n else n) for n in names]
    if not found:
        named = f"the control {control!r}" if control else "a Choices or Labels control"
        raise InvalidInput(where, f"has no region from {named}")
    distinct = sorted(set(found))
    if len(distinct) != 1:
        raise InvalidInput(where, f"names {len(distinct)} classes ({', '.join(distinct[:5])}); exactly one is expected")
    return distinct[0]


def _annotator(completed_by: Any) -> str:
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or completed_by.get("id") or "")
    return "" if completed_by is None else f"label-studio-user-{completed_by}"


def _data_uri(value: str, where: str) -> bytes:
    header, _, encoded = value.partition(",")
    if not header.endswith(";base64"):
        raise InvalidInput(where, "data: URI must be base64-encoded")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(where, "is not valid base64") from None


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
