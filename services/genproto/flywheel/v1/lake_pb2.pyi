import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SplitSpec(_message.Message):
    __slots__ = ("train", "validation", "test", "salt")
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    train: float
    validation: float
    test: float
    salt: str
    def __init__(self, train: _Optional[float] = ..., validation: _Optional[float] = ..., test: _Optional[float] = ..., salt: _Optional[str] = ...) -> None: ...

class CreateSnapshotRequest(_message.Message):
    __slots__ = ("labels", "sources", "as_of", "split", "description", "project")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    sources: _containers.RepeatedScalarFieldContainer[str]
    as_of: _timestamp_pb2.Timestamp
    split: SplitSpec
    description: str
    project: str
    def __init__(self, labels: _Optional[_Iterable[str]] = ..., sources: _Optional[_Iterable[str]] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., split: _Optional[_Union[SplitSpec, _Mapping]] = ..., description: _Optional[str] = ..., project: _Optional[str] = ...) -> None: ...

class SnapshotFile(_message.Message):
    __slots__ = ("split", "path", "rows", "sha256")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    split: str
    path: str
    rows: int
    sha256: str
    def __init__(self, split: _Optional[str] = ..., path: _Optional[str] = ..., rows: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("snapshot_id", "created_at", "files", "rows_per_split", "label_counts", "code_version", "uri", "description", "project")
    class RowsPerSplitEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class LabelCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    ROWS_PER_SPLIT_FIELD_NUMBER: _ClassVar[int]
    LABEL_COUNTS_FIELD_NUMBER: _ClassVar[int]
    CODE_VERSION_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    created_at: _timestamp_pb2.Timestamp
    files: _containers.RepeatedCompositeFieldContainer[SnapshotFile]
    rows_per_split: _containers.ScalarMap[str, int]
    label_counts: _containers.ScalarMap[str, int]
    code_version: str
    uri: str
    description: str
    project: str
    def __init__(self, snapshot_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., files: _Optional[_Iterable[_Union[SnapshotFile, _Mapping]]] = ..., rows_per_split: _Optional[_Mapping[str, int]] = ..., label_counts: _Optional[_Mapping[str, int]] = ..., code_version: _Optional[str] = ..., uri: _Optional[str] = ..., description: _Optional[str] = ..., project: _Optional[str] = ...) -> None: ...

class GetSnapshotRequest(_message.Message):
    __slots__ = ("snapshot_id",)
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    def __init__(self, snapshot_id: _Optional[str] = ...) -> None: ...

class ListSnapshotsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSnapshotsResponse(_message.Message):
    __slots__ = ("snapshots",)
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[Snapshot]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[Snapshot, _Mapping]]] = ...) -> None: ...

class LabelDistributionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LabelDistributionResponse(_message.Message):
    __slots__ = ("counts",)
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.ScalarMap[str, int]
    def __init__(self, counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class DiffSnapshotsRequest(_message.Message):
    __slots__ = ("base", "other")
    BASE_FIELD_NUMBER: _ClassVar[int]
    OTHER_FIELD_NUMBER: _ClassVar[int]
    base: str
    other: str
    def __init__(self, base: _Optional[str] = ..., other: _Optional[str] = ...) -> None: ...

class LabelChange(_message.Message):
    __slots__ = ("example_id", "before", "after")
    EXAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    example_id: str
    before: str
    after: str
    def __init__(self, example_id: _Optional[str] = ..., before: _Optional[str] = ..., after: _Optional[str] = ...) -> None: ...

class SnapshotDiff(_message.Message):
    __slots__ = ("base", "other", "added", "removed", "relabelled", "added_count", "removed_count", "relabelled_count", "moved_split_count", "rows_per_split_delta", "label_counts_delta", "same_code_version")
    class RowsPerSplitDeltaEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class LabelCountsDeltaEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    BASE_FIELD_NUMBER: _ClassVar[int]
    OTHER_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    RELABELLED_FIELD_NUMBER: _ClassVar[int]
    ADDED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REMOVED_COUNT_FIELD_NUMBER: _ClassVar[int]
    RELABELLED_COUNT_FIELD_NUMBER: _ClassVar[int]
    MOVED_SPLIT_COUNT_FIELD_NUMBER: _ClassVar[int]
    ROWS_PER_SPLIT_DELTA_FIELD_NUMBER: _ClassVar[int]
    LABEL_COUNTS_DELTA_FIELD_NUMBER: _ClassVar[int]
    SAME_CODE_VERSION_FIELD_NUMBER: _ClassVar[int]
    base: str
    other: str
    added: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    relabelled: _containers.RepeatedCompositeFieldContainer[LabelChange]
    added_count: int
    removed_count: int
    relabelled_count: int
    moved_split_count: int
    rows_per_split_delta: _containers.ScalarMap[str, int]
    label_counts_delta: _containers.ScalarMap[str, int]
    same_code_version: bool
    def __init__(self, base: _Optional[str] = ..., other: _Optional[str] = ..., added: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ..., relabelled: _Optional[_Iterable[_Union[LabelChange, _Mapping]]] = ..., added_count: _Optional[int] = ..., removed_count: _Optional[int] = ..., relabelled_count: _Optional[int] = ..., moved_split_count: _Optional[int] = ..., rows_per_split_delta: _Optional[_Mapping[str, int]] = ..., label_counts_delta: _Optional[_Mapping[str, int]] = ..., same_code_version: _Optional[bool] = ...) -> None: ...

class LatestLabelsRequest(_message.Message):
    __slots__ = ("example_ids", "limit")
    EXAMPLE_IDS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    example_ids: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    def __init__(self, example_ids: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ...) -> None: ...

class LatestLabel(_message.Message):
    __slots__ = ("example_id", "label", "source", "object_uri", "sha256", "updated_at", "event_id")
    EXAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OBJECT_URI_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    example_id: str
    label: str
    source: str
    object_uri: str
    sha256: str
    updated_at: _timestamp_pb2.Timestamp
    event_id: str
    def __init__(self, example_id: _Optional[str] = ..., label: _Optional[str] = ..., source: _Optional[str] = ..., object_uri: _Optional[str] = ..., sha256: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_id: _Optional[str] = ...) -> None: ...

class LatestLabelsResponse(_message.Message):
    __slots__ = ("labels", "total")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[LatestLabel]
    total: int
    def __init__(self, labels: _Optional[_Iterable[_Union[LatestLabel, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class FeatureStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClassFeatureStats(_message.Message):
    __slots__ = ("label", "count", "mean", "std", "min", "max")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    label: str
    count: int
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    min: _containers.RepeatedScalarFieldContainer[float]
    max: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, label: _Optional[str] = ..., count: _Optional[int] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., min: _Optional[_Iterable[float]] = ..., max: _Optional[_Iterable[float]] = ...) -> None: ...

class FeatureStatsResponse(_message.Message):
    __slots__ = ("classes",)
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    classes: _containers.RepeatedCompositeFieldContainer[ClassFeatureStats]
    def __init__(self, classes: _Optional[_Iterable[_Union[ClassFeatureStats, _Mapping]]] = ...) -> None: ...

class LiveAccuracyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelAccuracy(_message.Message):
    __slots__ = ("model", "model_version", "predictions", "labelled", "correct", "accuracy")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    LABELLED_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    predictions: int
    labelled: int
    correct: int
    accuracy: float
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., predictions: _Optional[int] = ..., labelled: _Optional[int] = ..., correct: _Optional[int] = ..., accuracy: _Optional[float] = ...) -> None: ...

class LiveAccuracyResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelAccuracy]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelAccuracy, _Mapping]]] = ...) -> None: ...

class LakeStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TopicStats(_message.Message):
    __slots__ = ("topic", "rows", "files", "distinct_events")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_EVENTS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    rows: int
    files: int
    distinct_events: int
    def __init__(self, topic: _Optional[str] = ..., rows: _Optional[int] = ..., files: _Optional[int] = ..., distinct_events: _Optional[int] = ...) -> None: ...

class LakeStatsResponse(_message.Message):
    __slots__ = ("topics",)
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedCompositeFieldContainer[TopicStats]
    def __init__(self, topics: _Optional[_Iterable[_Union[TopicStats, _Mapping]]] = ...) -> None: ...
