import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LabelAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_ACTION_UNSPECIFIED: _ClassVar[LabelAction]
    LABEL_ACTION_CREATED: _ClassVar[LabelAction]
    LABEL_ACTION_UPDATED: _ClassVar[LabelAction]
    LABEL_ACTION_DELETED: _ClassVar[LabelAction]
LABEL_ACTION_UNSPECIFIED: LabelAction
LABEL_ACTION_CREATED: LabelAction
LABEL_ACTION_UPDATED: LabelAction
LABEL_ACTION_DELETED: LabelAction

class EventMeta(_message.Message):
    __slots__ = ("event_id", "time", "source", "trace_id", "schema_version")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    time: _timestamp_pb2.Timestamp
    source: str
    trace_id: str
    schema_version: int
    def __init__(self, event_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., trace_id: _Optional[str] = ..., schema_version: _Optional[int] = ...) -> None: ...

class RawLabel(_message.Message):
    __slots__ = ("meta", "example_id", "label", "annotator", "data", "content_type", "features", "annotation_id", "action", "label_schema_version", "synthetic")
    META_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ANNOTATION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    LABEL_SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    SYNTHETIC_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    example_id: str
    label: str
    annotator: str
    data: bytes
    content_type: str
    features: _containers.RepeatedScalarFieldContainer[float]
    annotation_id: str
    action: LabelAction
    label_schema_version: int
    synthetic: bool
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., example_id: _Optional[str] = ..., label: _Optional[str] = ..., annotator: _Optional[str] = ..., data: _Optional[bytes] = ..., content_type: _Optional[str] = ..., features: _Optional[_Iterable[float]] = ..., annotation_id: _Optional[str] = ..., action: _Optional[_Union[LabelAction, str]] = ..., label_schema_version: _Optional[int] = ..., synthetic: _Optional[bool] = ...) -> None: ...

class LabelEvent(_message.Message):
    __slots__ = ("meta", "example_id", "object_uri", "sha256", "label", "annotator", "source", "label_schema_version", "action", "features", "annotation_id", "created_at", "updated_at", "attributes", "synthetic")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    META_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_URI_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ANNOTATION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SYNTHETIC_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    example_id: str
    object_uri: str
    sha256: str
    label: str
    annotator: str
    source: str
    label_schema_version: int
    action: LabelAction
    features: _containers.RepeatedScalarFieldContainer[float]
    annotation_id: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    attributes: _containers.ScalarMap[str, str]
    synthetic: bool
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., example_id: _Optional[str] = ..., object_uri: _Optional[str] = ..., sha256: _Optional[str] = ..., label: _Optional[str] = ..., annotator: _Optional[str] = ..., source: _Optional[str] = ..., label_schema_version: _Optional[int] = ..., action: _Optional[_Union[LabelAction, str]] = ..., features: _Optional[_Iterable[float]] = ..., annotation_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., synthetic: _Optional[bool] = ...) -> None: ...

class PredictionLog(_message.Message):
    __slots__ = ("meta", "request_id", "model", "model_version", "input_features", "input_ref", "output_scores", "predicted_label", "predicted_class", "latency_ms", "key_id", "route", "example_id", "synthetic")
    META_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FEATURES_FIELD_NUMBER: _ClassVar[int]
    INPUT_REF_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SCORES_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_LABEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    SYNTHETIC_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    request_id: str
    model: str
    model_version: str
    input_features: _containers.RepeatedScalarFieldContainer[float]
    input_ref: str
    output_scores: _containers.RepeatedScalarFieldContainer[float]
    predicted_label: str
    predicted_class: int
    latency_ms: float
    key_id: str
    route: str
    example_id: str
    synthetic: bool
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., request_id: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., input_features: _Optional[_Iterable[float]] = ..., input_ref: _Optional[str] = ..., output_scores: _Optional[_Iterable[float]] = ..., predicted_label: _Optional[str] = ..., predicted_class: _Optional[int] = ..., latency_ms: _Optional[float] = ..., key_id: _Optional[str] = ..., route: _Optional[str] = ..., example_id: _Optional[str] = ..., synthetic: _Optional[bool] = ...) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ("meta", "model", "snapshot_id", "model_family", "hyperparameters", "budget_s", "reason", "caused_by", "model_version", "drifted_share")
    class HyperparametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    META_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FAMILY_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_S_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CAUSED_BY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_SHARE_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    model: str
    snapshot_id: str
    model_family: str
    hyperparameters: _containers.ScalarMap[str, str]
    budget_s: float
    reason: str
    caused_by: str
    model_version: str
    drifted_share: float
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., model: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., model_family: _Optional[str] = ..., hyperparameters: _Optional[_Mapping[str, str]] = ..., budget_s: _Optional[float] = ..., reason: _Optional[str] = ..., caused_by: _Optional[str] = ..., model_version: _Optional[str] = ..., drifted_share: _Optional[float] = ...) -> None: ...

class ModelPublished(_message.Message):
    __slots__ = ("meta", "model", "version", "stage", "repository_uri", "snapshot_id", "metrics", "platform")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    META_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_URI_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    model: str
    version: str
    stage: str
    repository_uri: str
    snapshot_id: str
    metrics: _containers.ScalarMap[str, float]
    platform: str
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., stage: _Optional[str] = ..., repository_uri: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., platform: _Optional[str] = ...) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("feature", "test", "statistic", "p_value", "drifted")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    feature: str
    test: str
    statistic: float
    p_value: float
    drifted: bool
    def __init__(self, feature: _Optional[str] = ..., test: _Optional[str] = ..., statistic: _Optional[float] = ..., p_value: _Optional[float] = ..., drifted: _Optional[bool] = ...) -> None: ...

class DriftAlert(_message.Message):
    __slots__ = ("meta", "model", "model_version", "snapshot_id", "windows", "drifted_share", "sample_count", "features")
    META_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_SHARE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    model: str
    model_version: str
    snapshot_id: str
    windows: int
    drifted_share: float
    sample_count: int
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., windows: _Optional[int] = ..., drifted_share: _Optional[float] = ..., sample_count: _Optional[int] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("meta", "original_topic", "partition", "offset", "key", "value", "reason", "consumer_group", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    META_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_GROUP_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    original_topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    reason: str
    consumer_group: str
    headers: _containers.ScalarMap[str, str]
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., original_topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., reason: _Optional[str] = ..., consumer_group: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...
