"""opentelemetry's config (Kong's ``kong/plugins/opentelemetry/schema.lua`` with
``typedefs.propagation``, 3.x): same fields, defaults and checks.

- ``endpoint`` is Kong's deprecated shorthand for ``traces_endpoint`` (it sets it and is not kept).
- ``batch_span_count`` and ``batch_flush_delay`` are deprecated: they map to ``queue.max_batch_size``
  and ``queue.max_coalescing_delay`` as Kong maps them (see the handler).
- ``queue`` defaults to ``{max_batch_size: 200}``; as in Kong, a ``queue`` that is given gets
  the queue's own field defaults (``max_batch_size`` 1 unless it says otherwise).
- ``header_type`` is Kong's legacy way to say ``propagation``; it is used only while
  ``propagation`` sets none of ``extract``, ``inject`` and ``clear``.
- Refused: ``logs_endpoint`` (Zonegate exports traces only) and the trace header formats it
  does not read or write (``jaeger``, ``ot``, ``datadog``, ``aws``, ``gcp``): a config that asks
  for them would otherwise lose data without a word.
"""

from __future__ import annotations

from typing import Any, Final

from zonegate.core import fields as f
from zonegate.core import typedefs as t
from zonegate.core.schema import at_least_one_of
from zonegate.plugins.http_log.schema import QUEUE
from zonegate.plugins.opentelemetry.propagation import (
    EXTRACTORS,
    IGNORE,
    INJECTORS,
    KONG_FORMATS,
    PRESERVE,
)

NAME: Final = "opentelemetry"

# Kong's header_type values, in Kong's order (its error message lists them so).
HEADER_TYPES: Final = (
    "preserve",
    "ignore",
    "b3",
    "b3-single",
    "w3c",
    "jaeger",
    "ot",
    "aws",
    "gcp",
    "datadog",
)

NO_LOGS: Final = "logs_endpoint is not supported by Zonegate: it exports traces only"


def _supported(supported: tuple[str, ...]) -> f.Validator:
    listed = ", ".join(supported)

    def check(value: Any) -> str | None:
        if value in supported:
            return None
        return f"{value} is not supported by Zonegate (supported: {listed})"

    return check


def _no_logs(value: Any) -> str | None:
    return NO_LOGS


def _format(options: tuple[str, ...], supported: tuple[str, ...], **more: Any) -> f.Field:
    """Kong's ``one_of`` first (its message for unknown values), then Zonegate's own subset."""
    return f.string(f.one_of(*options), _supported(supported), **more)


def _endpoint_shorthand(config: dict[str, Any]) -> dict[str, Any]:
    """Kong's ``endpoint`` shorthand sets ``traces_endpoint`` and is not stored itself. A record
    check is the one hook a plugin config has after its fields are validated."""
    endpoint = config.get("endpoint")
    if endpoint is not None:
        config["traces_endpoint"] = endpoint
        config["endpoint"] = None
    return {}


PROPAGATION: Final = f.record(
    (
        "extract",
        f.array(
            _format(tuple(x for x in KONG_FORMATS if x != "b3-single"), EXTRACTORS),
            description="Formats read from requests, first found wins; empty: start a new trace.",
        ),
    ),
    (
        "clear",
        f.array(t.header_name, description="Headers removed after extraction (not sent upstream)."),
    ),
    (
        "inject",
        f.array(
            _format((PRESERVE, *KONG_FORMATS), (PRESERVE, *INJECTORS)),
            description="Formats written upstream; preserve: the one found (else default_format).",
        ),
    ),
    (
        "default_format",
        _format(
            KONG_FORMATS,
            INJECTORS,
            required=True,
            description="What preserve writes when nothing was found.",
        ),
    ),
    default={"default_format": "w3c"},
)

CONFIG: Final = f.record(
    ("traces_endpoint", t.url(description="The OTLP/HTTP traces endpoint, e.g. http://otel:4318/v1/traces.")),
    ("logs_endpoint", f.string(_no_logs, description="Kong's OTLP logs endpoint: refused when set.")),
    (
        "endpoint",
        t.url(description="Deprecated in Kong: traces_endpoint (set it instead; not kept)."),
    ),
    (
        "headers",
        f.map_of(t.header_name, f.string(), description="Headers added to every export request."),
    ),
    (
        "resource_attributes",
        f.map_of(
            f.string(required=True),
            f.string(required=True),
            description="OTLP resource attributes, over the defaults service.name (kong), "
            "service.version and service.instance.id (the node id).",
        ),
    ),
    ("queue", QUEUE(default={"max_batch_size": 200})),
    ("batch_span_count", f.integer(description="Deprecated in Kong: queue.max_batch_size.")),
    ("batch_flush_delay", f.integer(description="Deprecated in Kong: queue.max_coalescing_delay (seconds).")),
    ("connect_timeout", t.timeout(default=1000, description="Milliseconds to connect to the collector.")),
    ("send_timeout", t.timeout(default=5000, description="Milliseconds to send a batch.")),
    ("read_timeout", t.timeout(default=5000, description="Milliseconds to wait for the answer.")),
    (
        "http_response_header_for_traceid",
        t.header_name(description="When set, the response carries the trace id (hex) in this header."),
    ),
    (
        "header_type",
        _format(
            HEADER_TYPES,
            (PRESERVE, IGNORE, *INJECTORS),
            default=PRESERVE,
            description="Deprecated in Kong: propagation. preserve: continue and write back the "
            "caller's format; ignore: never read; a format: also write it.",
        ),
    ),
    (
        "sampling_rate",
        f.number(
            f.between(0, 1),
            description="Share of new traces recorded (unset: 1). A caller that decided not to "
            "sample is followed.",
        ),
    ),
    ("propagation", PROPAGATION),
    required=True,
    default={},
    record_checks=(_endpoint_shorthand,),
)

ENTITY_CHECKS: Final = (at_least_one_of("config.traces_endpoint", "config.logs_endpoint"),)
