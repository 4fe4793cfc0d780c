from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT16: _ClassVar[DType]
    DTYPE_BFLOAT16: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT64: _ClassVar[DType]
    DTYPE_INT64: _ClassVar[DType]
    DTYPE_INT32: _ClassVar[DType]
    DTYPE_UINT8: _ClassVar[DType]
    DTYPE_BOOL: _ClassVar[DType]

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_RAW: _ClassVar[Encoding]
    ENCODING_FLOAT16: _ClassVar[Encoding]
    ENCODING_INT8: _ClassVar[Encoding]
    ENCODING_TOPK: _ClassVar[Encoding]

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_TRAIN: _ClassVar[Mode]
    MODE_EVAL: _ClassVar[Mode]

class Route(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTE_UNSPECIFIED: _ClassVar[Route]
    ROUTE_PEER: _ClassVar[Route]
    ROUTE_SERVER: _ClassVar[Route]

class StepDoneTag(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_DONE_TAG_UNSPECIFIED: _ClassVar[StepDoneTag]
    STEP_DONE_TAG_STEP: _ClassVar[StepDoneTag]
    STEP_DONE_TAG_RELAY: _ClassVar[StepDoneTag]
    STEP_DONE_TAG_ABORT: _ClassVar[StepDoneTag]
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT16: DType
DTYPE_BFLOAT16: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT64: DType
DTYPE_INT64: DType
DTYPE_INT32: DType
DTYPE_UINT8: DType
DTYPE_BOOL: DType
ENCODING_RAW: Encoding
ENCODING_FLOAT16: Encoding
ENCODING_INT8: Encoding
ENCODING_TOPK: Encoding
MODE_UNSPECIFIED: Mode
MODE_TRAIN: Mode
MODE_EVAL: Mode
ROUTE_UNSPECIFIED: Route
ROUTE_PEER: Route
ROUTE_SERVER: Route
STEP_DONE_TAG_UNSPECIFIED: StepDoneTag
STEP_DONE_TAG_STEP: StepDoneTag
STEP_DONE_TAG_RELAY: StepDoneTag
STEP_DONE_TAG_ABORT: StepDoneTag

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data", "encoding", "scale", "zero_point", "indices")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ZERO_POINT_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    encoding: Encoding
    scale: float
    zero_point: int
    indices: bytes
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., scale: _Optional[float] = ..., zero_point: _Optional[int] = ..., indices: _Optional[bytes] = ...) -> None: ...

class TensorEntry(_message.Message):
    __slots__ = ("key", "tensor")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    key: str
    tensor: Tensor
    def __init__(self, key: _Optional[str] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class TensorMap(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[TensorEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[TensorEntry, _Mapping]]] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("sender", "receiver", "step", "kind")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    sender: str
    receiver: str
    step: int
    kind: str
    def __init__(self, sender: _Optional[str] = ..., receiver: _Optional[str] = ..., step: _Optional[int] = ..., kind: _Optional[str] = ...) -> None: ...

class Manifest(_message.Message):
    __slots__ = ("sample_ids",)
    SAMPLE_IDS_FIELD_NUMBER: _ClassVar[int]
    sample_ids: TensorMap
    def __init__(self, sample_ids: _Optional[_Union[TensorMap, _Mapping]] = ...) -> None: ...

class Binding(_message.Message):
    __slots__ = ("role", "party")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PARTY_FIELD_NUMBER: _ClassVar[int]
    role: str
    party: str
    def __init__(self, role: _Optional[str] = ..., party: _Optional[str] = ...) -> None: ...

class StartStep(_message.Message):
    __slots__ = ("mode", "split", "sample_ids", "bindings", "checkpoint", "epoch")
    MODE_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_IDS_FIELD_NUMBER: _ClassVar[int]
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    mode: Mode
    split: str
    sample_ids: Tensor
    bindings: _containers.RepeatedCompositeFieldContainer[Binding]
    checkpoint: bool
    epoch: int
    def __init__(self, mode: _Optional[_Union[Mode, str]] = ..., split: _Optional[str] = ..., sample_ids: _Optional[_Union[Tensor, _Mapping]] = ..., bindings: _Optional[_Iterable[_Union[Binding, _Mapping]]] = ..., checkpoint: _Optional[bool] = ..., epoch: _Optional[int] = ...) -> None: ...

class Activation(_message.Message):
    __slots__ = ("mode", "src", "dst", "tensor", "sample_ids")
    MODE_FIELD_NUMBER: _ClassVar[int]
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_IDS_FIELD_NUMBER: _ClassVar[int]
    mode: Mode
    src: str
    dst: str
    tensor: Tensor
    sample_ids: Tensor
    def __init__(self, mode: _Optional[_Union[Mode, str]] = ..., src: _Optional[str] = ..., dst: _Optional[str] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., sample_ids: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Gradient(_message.Message):
    __slots__ = ("src", "dst", "tensor")
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    src: str
    dst: str
    tensor: Tensor
    def __init__(self, src: _Optional[str] = ..., dst: _Optional[str] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Labels(_message.Message):
    __slots__ = ("task", "labels", "sample_ids")
    TASK_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_IDS_FIELD_NUMBER: _ClassVar[int]
    task: str
    labels: Tensor
    sample_ids: Tensor
    def __init__(self, task: _Optional[str] = ..., labels: _Optional[_Union[Tensor, _Mapping]] = ..., sample_ids: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("task", "tensor", "sample_ids")
    TASK_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_IDS_FIELD_NUMBER: _ClassVar[int]
    task: str
    tensor: Tensor
    sample_ids: Tensor
    def __init__(self, task: _Optional[str] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., sample_ids: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class StepDone(_message.Message):
    __slots__ = ("tag",)
    TAG_FIELD_NUMBER: _ClassVar[int]
    tag: StepDoneTag
    def __init__(self, tag: _Optional[_Union[StepDoneTag, str]] = ...) -> None: ...

class RelayRequest(_message.Message):
    __slots__ = ("destination", "route")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    destination: str
    route: Route
    def __init__(self, destination: _Optional[str] = ..., route: _Optional[_Union[Route, str]] = ...) -> None: ...

class Weights(_message.Message):
    __slots__ = ("destination", "state", "meta")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    destination: str
    state: TensorMap
    meta: str
    def __init__(self, destination: _Optional[str] = ..., state: _Optional[_Union[TensorMap, _Mapping]] = ..., meta: _Optional[str] = ...) -> None: ...

class Abort(_message.Message):
    __slots__ = ("restore_to",)
    RESTORE_TO_FIELD_NUMBER: _ClassVar[int]
    restore_to: int
    def __init__(self, restore_to: _Optional[int] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("split", "leakage_batch_size")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    LEAKAGE_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    split: str
    leakage_batch_size: int
    def __init__(self, split: _Optional[str] = ..., leakage_batch_size: _Optional[int] = ...) -> None: ...

class Scores(_message.Message):
    __slots__ = ("split", "meta")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    split: str
    meta: str
    def __init__(self, split: _Optional[str] = ..., meta: _Optional[str] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("header", "manifest", "start_step", "activation", "gradient", "labels", "output", "step_done", "relay_request", "weights", "abort", "score_request", "scores")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    START_STEP_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    STEP_DONE_FIELD_NUMBER: _ClassVar[int]
    RELAY_REQUEST_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    SCORE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    header: Header
    manifest: Manifest
    start_step: StartStep
    activation: Activation
    gradient: Gradient
    labels: Labels
    output: Output
    step_done: StepDone
    relay_request: RelayRequest
    weights: Weights
    abort: Abort
    score_request: ScoreRequest
    scores: Scores
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., manifest: _Optional[_Union[Manifest, _Mapping]] = ..., start_step: _Optional[_Union[StartStep, _Mapping]] = ..., activation: _Optional[_Union[Activation, _Mapping]] = ..., gradient: _Optional[_Union[Gradient, _Mapping]] = ..., labels: _Optional[_Union[Labels, _Mapping]] = ..., output: _Optional[_Union[Output, _Mapping]] = ..., step_done: _Optional[_Union[StepDone, _Mapping]] = ..., relay_request: _Optional[_Union[RelayRequest, _Mapping]] = ..., weights: _Optional[_Union[Weights, _Mapping]] = ..., abort: _Optional[_Union[Abort, _Mapping]] = ..., score_request: _Optional[_Union[ScoreRequest, _Mapping]] = ..., scores: _Optional[_Union[Scores, _Mapping]] = ...) -> None: ...
