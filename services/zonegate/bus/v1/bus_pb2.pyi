from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SnapshotHeader(_message.Message):
    __slots__ = ("version", "config_hash", "group_hashes", "zonegate_version", "plugins", "created_at_ms", "cluster", "group", "payload_sha256", "payload_size", "raw_size", "compression", "object", "signer", "base_version", "base_config_hash")
    class GroupHashesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class PluginsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_HASH_FIELD_NUMBER: _ClassVar[int]
    GROUP_HASHES_FIELD_NUMBER: _ClassVar[int]
    ZONEGATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLUGINS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SIZE_FIELD_NUMBER: _ClassVar[int]
    RAW_SIZE_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    SIGNER_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    BASE_CONFIG_HASH_FIELD_NUMBER: _ClassVar[int]
    version: int
    config_hash: str
    group_hashes: _containers.ScalarMap[str, str]
    zonegate_version: str
    plugins: _containers.ScalarMap[str, str]
    created_at_ms: int
    cluster: str
    group: str
    payload_sha256: bytes
    payload_size: int
    raw_size: int
    compression: str
    object: ObjectReference
    signer: str
    base_version: int
    base_config_hash: str
    def __init__(self, version: _Optional[int] = ..., config_hash: _Optional[str] = ..., group_hashes: _Optional[_Mapping[str, str]] = ..., zonegate_version: _Optional[str] = ..., plugins: _Optional[_Mapping[str, str]] = ..., created_at_ms: _Optional[int] = ..., cluster: _Optional[str] = ..., group: _Optional[str] = ..., payload_sha256: _Optional[bytes] = ..., payload_size: _Optional[int] = ..., raw_size: _Optional[int] = ..., compression: _Optional[str] = ..., object: _Optional[_Union[ObjectReference, _Mapping]] = ..., signer: _Optional[str] = ..., base_version: _Optional[int] = ..., base_config_hash: _Optional[str] = ...) -> None: ...

class ObjectReference(_message.Message):
    __slots__ = ("bucket", "name")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    name: str
    def __init__(self, bucket: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class SignedSnapshot(_message.Message):
    __slots__ = ("header", "signature", "signature_algorithm", "signer_certificate", "payload")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    SIGNER_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    header: bytes
    signature: bytes
    signature_algorithm: str
    signer_certificate: bytes
    payload: bytes
    def __init__(self, header: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., signature_algorithm: _Optional[str] = ..., signer_certificate: _Optional[bytes] = ..., payload: _Optional[bytes] = ...) -> None: ...

class Announcement(_message.Message):
    __slots__ = ("version", "config_hash", "stream_sequence", "group", "delta")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_HASH_FIELD_NUMBER: _ClassVar[int]
    STREAM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    version: int
    config_hash: str
    stream_sequence: int
    group: str
    delta: bytes
    def __init__(self, version: _Optional[int] = ..., config_hash: _Optional[str] = ..., stream_sequence: _Optional[int] = ..., group: _Optional[str] = ..., delta: _Optional[bytes] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("node_id", "version", "config_hash", "applied", "reason", "sync_status", "serving_version", "serving_hash", "at_ms", "stream_sequence")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_HASH_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SYNC_STATUS_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVING_HASH_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    STREAM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    version: int
    config_hash: str
    applied: bool
    reason: str
    sync_status: str
    serving_version: int
    serving_hash: str
    at_ms: int
    stream_sequence: int
    def __init__(self, node_id: _Optional[str] = ..., version: _Optional[int] = ..., config_hash: _Optional[str] = ..., applied: _Optional[bool] = ..., reason: _Optional[str] = ..., sync_status: _Optional[str] = ..., serving_version: _Optional[int] = ..., serving_hash: _Optional[str] = ..., at_ms: _Optional[int] = ..., stream_sequence: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("node_id", "hostname", "ip", "zonegate_version", "labels", "config_version", "config_hash", "plugins", "cert_expiry", "last_error", "sent_at_ms", "sync_status", "rejected_version", "group", "interval_seconds")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class PluginsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    ZONEGATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_HASH_FIELD_NUMBER: _ClassVar[int]
    PLUGINS_FIELD_NUMBER: _ClassVar[int]
    CERT_EXPIRY_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SYNC_STATUS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    hostname: str
    ip: str
    zonegate_version: str
    labels: _containers.ScalarMap[str, str]
    config_version: int
    config_hash: str
    plugins: _containers.ScalarMap[str, str]
    cert_expiry: int
    last_error: str
    sent_at_ms: int
    sync_status: str
    rejected_version: int
    group: str
    interval_seconds: int
    def __init__(self, node_id: _Optional[str] = ..., hostname: _Optional[str] = ..., ip: _Optional[str] = ..., zonegate_version: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., config_version: _Optional[int] = ..., config_hash: _Optional[str] = ..., plugins: _Optional[_Mapping[str, str]] = ..., cert_expiry: _Optional[int] = ..., last_error: _Optional[str] = ..., sent_at_ms: _Optional[int] = ..., sync_status: _Optional[str] = ..., rejected_version: _Optional[int] = ..., group: _Optional[str] = ..., interval_seconds: _Optional[int] = ...) -> None: ...
