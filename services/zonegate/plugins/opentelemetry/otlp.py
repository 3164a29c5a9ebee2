"""OTLP/HTTP bodies: a batch of span tuples as one ``ExportTraceServiceRequest`` (protobuf).

Runs in the exporter, once per batch, never per request. The shape is Kong's: one resource
(``service.name`` ``kong``, ``service.version``, ``service.instance.id``, then the configured
``resource_attributes`` over them), one scope ``kong-internal`` 0.1.0, every span under it.
Integers go out as ``int_value`` (Kong sends Lua numbers as doubles except ``http.status_code``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from zonegate.plugins.opentelemetry.spans import AttributeValue, Span

CONTENT_TYPE: Final = "application/x-protobuf"
SCOPE_NAME: Final = "kong-internal"
SCOPE_VERSION: Final = "0.1.0"


def resource_attributes(
    version: str, node_id: str | None, configured: dict[str, str] | None
) -> tuple[tuple[str, AttributeValue], ...]:
    """Kong's defaults, overridden by the plugin's ``resource_attributes``."""
    merged: dict[str, AttributeValue] = {"service.name": "kong", "service.version": version}
    if node_id:
        merged["service.instance.id"] = node_id
    merged.update(configured or {})
    return tuple(merged.items())


def _fill(target: KeyValue, key: str, value: AttributeValue) -> None:
    target.key = key
    if isinstance(value, bool):  # before int: a bool is an int in Python
        target.value.bool_value = value
    elif isinstance(value, int):
        target.value.int_value = value
    elif isinstance(value, float):
        target.value.double_value = value
    else:
        target.value.string_value = value


def _add_attributes(
    attributes: RepeatedCompositeFieldContainer[KeyValue], pairs: Iterable[tuple[str, AttributeValue]]
) -> None:
    for key, value in pairs:
        _fill(attributes.add(), key, value)


def encode_traces(spans: Sequence[Span], resource: Iterable[tuple[str, AttributeValue]]) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    _add_attributes(resource_spans.resource.attributes, resource)
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = SCOPE_NAME
    scope_spans.scope.version = SCOPE_VERSION
    out_spans = scope_spans.spans
    for span in spans:
        out = out_spans.add()
        out.trace_id = span.trace_id.to_bytes(16, "big")
        out.span_id = span.span_id.to_bytes(8, "big")
        if span.parent_id:
            out.parent_span_id = span.parent_id.to_bytes(8, "big")
        out.name = span.name
        out.kind = span.kind  # type: ignore[assignment]
        out.start_time_unix_nano = span.start_ns
        out.end_time_unix_nano = span.end_ns
        _add_attributes(out.attributes, span.attributes)
        if span.status:
            out.status.code = span.status  # type: ignore[assignment]
    return request.SerializeToString()
